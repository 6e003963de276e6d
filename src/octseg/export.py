"""Exporting a trained segmenter for use outside OCTSeg: ONNX, TorchScript and ``torch.export``
(``.pt2``) files that take a B-scan batch of any height and width and return logits at that size.

The exported graph holds the padding that :class:`~octseg.models.wrappers.PadToDivisor` does in
PyTorch (bottom/right reflection up to the network's size divisor) and the crop back, so a
consumer feeds ``[B, C, H, W]`` float32 images normalised as in training and gets ``[B, K, H, W]``
logits. Every file is checked against PyTorch on sizes other than the export example before it
is kept (written to a temporary name, renamed only when it matches), so a graph that silently
specialised to one input size is never shipped.

Networks whose computation depends on the input size (e.g. Y-Net's Fourier units) still export
with symbolic sizes (torch.export keeps runtime checks instead of specialising the graph); where
a format cannot do that (TorchScript traces the network at one padded size), the check fails with
an error that says to export for one fixed ``static_hw`` instead.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from octseg.models.base import as_seg_output
from octseg.models.wrappers import PadToDivisor
from octseg.utils.io import atomic_write_json

__all__ = [
    "EXPORT_FORMATS",
    "ExportResult",
    "PaddedLogits",
    "export_metadata",
    "export_module",
    "exportable_network",
    "format_export_summary",
]

#: Formats :func:`export_module` writes, with their file suffixes.
EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}


class PaddedLogits(nn.Module):
    """A network with its padding inside: ``[B, C, H, W] -> logits [B, K, H, W]``.

    Unlike :class:`PadToDivisor` it has no size-dependent Python branch (it always pads, by
    zero rows where the size is already a multiple), so ``torch.export`` and TorchScript keep
    ``H`` and ``W`` symbolic; it requires ``H, W > size_divisor`` so that reflection never needs
    more rows than the image has and the bottleneck is never one pixel (PyTorch's fallback to
    replication for tiny inputs is not reproduced; the exported input range starts above the
    divisor).

    Args:
        net: the raw network (not wrapped in :class:`PadToDivisor`).
        size_divisor: ``(div_h, div_w)``.
    """

    def __init__(self, net: nn.Module, size_divisor: tuple[int, int]) -> None:
        super().__init__()
        self.net = net
        self.div_h, self.div_w = int(size_divisor[0]), int(size_divisor[1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2], image.shape[-1]
        padded = F.pad(image, [0, -w % self.div_w, 0, -h % self.div_h], mode="reflect")
        return self.net(padded)[:, :, :h, :w]


class _LogitsOnly(nn.Module):
    """The logits of a network that may return a :class:`SegOutput` (traced as a tensor)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_seg_output(self.net(x)).logits


def exportable_network(
    module: nn.Module,
) -> tuple[nn.Module, tuple[int, int], tuple[int, int]]:
    """The raw network of a trained module, returning logits, its size divisor and the smallest
    input it is exported for: above the divisor, and at least the network's own ``min_hw`` (for
    such inputs :class:`PadToDivisor` pads to the divisor only, as :class:`PaddedLogits` does).

    Raises:
        ValueError: when the module has no segmentation network (``module.net``) to export, or
            the network needs square inputs.
    """
    net = getattr(module, "net", None)
    if not isinstance(net, nn.Module):
        raise ValueError(
            f"{type(module).__name__} has no segmentation network under .net to export; "
            "scripts/export.py exports supervised segmenters (SegModule and its subclasses)."
        )
    min_hw = (1, 1)
    if isinstance(net, PadToDivisor):
        if net.requires_square:
            raise ValueError(
                f"model.net <{type(net.net).__name__}> needs square inputs; the exported padding "
                "(to the size divisor only) does not reproduce that, so it cannot be exported."
            )
        divisor = net.size_divisor
        min_hw = tuple(int(v) for v in (net.min_hw or (1, 1)))
        net = net.net
    else:
        d = getattr(net, "size_divisor", 1)
        divisor = (d, d) if isinstance(d, int) else (int(d[0]), int(d[1]))
    smallest = (max(divisor[0] + 1, min_hw[0]), max(divisor[1] + 1, min_hw[1]))
    return _LogitsOnly(net).eval(), divisor, smallest


@dataclass
class ExportResult:
    """What :func:`export_module` wrote and how closely each file matches PyTorch."""

    files: dict[str, Path] = field(default_factory=dict)
    max_abs_error: dict[str, float] = field(default_factory=dict)
    dynamic_hw: bool = True
    checked_hw: list[tuple[int, int]] = field(default_factory=list)


def _check_sizes(
    example_hw: tuple[int, int], divisor: tuple[int, int], smallest: tuple[int, int]
) -> list[tuple[int, int]]:
    """Sizes the exported graph is compared on: the example and two others, odd and not
    multiples of the divisor, so a graph specialised to the example shows up."""
    h, w = example_hw
    dh, dw = divisor
    return [(h, w), (h + dh + 3, w + 2 * dw + 5), (h + 1, max(w - 3, smallest[1]))]


def _compare(
    run: Callable[[torch.Tensor], np.ndarray],
    reference: nn.Module,
    sizes: Sequence[tuple[int, int]],
    in_channels: int,
    atol: float,
    what: str,
) -> float:
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for h, w in sizes:
        x = torch.randn(2, in_channels, h, w, generator=generator)
        with torch.no_grad():
            expected = reference(x).numpy()
        try:
            got = np.asarray(run(x))
        except Exception as err:  # runtimes raise their own types on a specialised graph
            raise ValueError(
                f"The exported {what} fails on a {h} x {w} input ({type(err).__name__}: "
                f"{str(err)[:300]}); the network's graph depends on the input size. Export "
                "it for one size with export.static_hw=[H,W]."
            ) from err
        if got.shape != expected.shape:
            raise ValueError(
                f"The exported {what} returns {got.shape} for a {h} x {w} input, PyTorch "
                f"{expected.shape}; export it for one size with export.static_hw=[H,W]."
            )
        err = float(np.abs(got - expected).max())
        if not err <= atol:
            raise ValueError(
                f"The exported {what} differs from PyTorch by {err:.3g} (> atol {atol}) on a "
                f"{h} x {w} input; the network's graph depends on the input size. Export it "
                "for one size with export.static_hw=[H,W]."
            )
        worst = max(worst, err)
    return worst


def _temporary(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def export_module(
    module: nn.Module,
    out_stem: str | Path,
    in_channels: int,
    example_hw: tuple[int, int] = (128, 128),
    formats: Sequence[str] = ("onnx", "torchscript"),
    static_hw: tuple[int, int] | None = None,
    opset: int = 18,
    atol: float = 1e-4,
    metadata: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Exports the segmentation network of a trained module.

    Args:
        module: a trained module with its network under ``.net`` (e.g. :class:`SegModule`).
        out_stem: path without suffix; each format adds its own (:data:`EXPORT_FORMATS`), and
            ``<stem>.json`` holds ``metadata`` plus the input contract.
        in_channels: image channels the network takes.
        example_hw: the size the graph is traced at (any size above the divisor).
        formats: any of ``onnx``, ``torchscript``, ``pt2``.
        static_hw: export for this one ``(H, W)`` only (networks whose graph depends on the
            size); default: any ``H, W > size divisor``, batch size free in every case.
        opset: ONNX opset.
        atol: largest accepted difference to PyTorch's logits on the checked sizes.
        metadata: facts stored beside the files (classes, spacing, normalisation, run).

    Raises:
        ValueError: unknown format, a size below the divisor, or an exported graph that does
            not reproduce PyTorch on other sizes (the message says to use ``static_hw``).
    """
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown or not formats:
        raise ValueError(
            f"export.formats={list(formats)}: unknown {unknown}; choose from "
            f"{sorted(EXPORT_FORMATS)}."
        )
    net, divisor, smallest = exportable_network(module)
    model = PaddedLogits(net, divisor).eval()
    hw = tuple(int(v) for v in (static_hw or example_hw))
    if hw[0] < smallest[0] or hw[1] < smallest[1]:
        raise ValueError(
            f"export size {hw} is below the smallest input {smallest} this network is exported "
            f"for (above its size divisor {divisor}, at least its min_hw); use a larger "
            "export.example_hw (or static_hw)."
        )
    # Batch 2: an example of size 1 would specialise the batch dimension (0/1 specialisation).
    example = torch.randn(2, in_channels, *hw)
    dynamic = static_hw is None
    sizes = _check_sizes(hw, divisor, smallest) if dynamic else [hw]
    # Sizes stay symbolic: DYNAMIC dims, and the exporter's own settings for graphs whose
    # guards it cannot prove (runtime asserts instead of a specialised graph; size-oblivious
    # reasoning about 0/1 sizes), which torch.onnx also uses. The check on other sizes below
    # is what guarantees the result.
    dims = {0: torch.export.Dim.DYNAMIC}
    if dynamic:
        dims.update({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    result = ExportResult(dynamic_hw=dynamic, checked_hw=list(sizes))
    program = None
    if {"onnx", "pt2"} & set(formats):
        try:
            with torch.fx.experimental._config.patch(backed_size_oblivious=True):
                program = torch.export.export(
                    model, (example,), dynamic_shapes={"image": dims}, strict=False,
                    prefer_deferred_runtime_asserts_over_guards=True,
                )  # fmt: skip
        except Exception as err:  # torch.export raises several types on size-dependent code
            raise ValueError(
                f"model.net <{type(net.net).__name__}> cannot be exported for any input size: "
                f"its computation depends on the size ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:300]}). Export it for one size with "
                "export.static_hw=[H,W] (e.g. your scans' height and width)."
            ) from err
    for fmt in formats:
        final = stem.with_name(stem.name + EXPORT_FORMATS[fmt])
        tmp = _temporary(final)
        try:
            if fmt == "onnx":
                torch.onnx.export(
                    program, (example,), str(tmp), input_names=["image"],
                    output_names=["logits"], opset_version=opset, dynamo=True,
                    external_data=False, verbose=False, optimize=False,
                )  # fmt: skip
                run = _onnx_runner(tmp)
            elif fmt == "pt2":
                torch.export.save(program, str(tmp))
                loaded = torch.export.load(str(tmp)).module()
                run = lambda x, m=loaded: m(x).detach().numpy()  # noqa: E731
            else:
                scripted = _torchscript(net, divisor, hw, in_channels)
                torch.jit.save(scripted, str(tmp))
                loaded = torch.jit.load(str(tmp))
                run = lambda x, m=loaded: m(x).detach().numpy()  # noqa: E731
            result.max_abs_error[fmt] = _compare(run, model, sizes, in_channels, atol, fmt)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        result.files[fmt] = final
    contract = {
        "input": "image [batch, in_channels, height, width] float32, normalised as in training",
        "output": "logits [batch, num_classes, height, width]; argmax over classes = labels",
        "in_channels": in_channels,
        "size_divisor": list(divisor),
        "dynamic_hw": dynamic,
        "static_hw": None if dynamic else list(hw),
        "min_hw": list(smallest) if dynamic else list(hw),
        "checked_hw": [list(s) for s in sizes],
        "max_abs_error": result.max_abs_error,
        "opset": opset if "onnx" in formats else None,
        "torch": torch.__version__,
        "files": {k: v.name for k, v in result.files.items()},
    }
    atomic_write_json(stem.with_name(stem.name + ".json"), {**dict(metadata or {}), **contract})
    return result


def _onnx_runner(path: Path) -> Callable[[torch.Tensor], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


class _ScriptedPadding(nn.Module):
    """TorchScript form of :class:`PaddedLogits`: scripted padding around a traced network.

    Tracing the padding would freeze the pad amounts of the example; scripting keeps them
    computed from each input, while the network itself (often not scriptable: third-party
    blocks, dynamic Python) is traced at a padded size.
    """

    def __init__(self, net: torch.jit.ScriptModule, div_h: int, div_w: int) -> None:
        super().__init__()
        self.net = net
        self.div_h = div_h
        self.div_w = div_w

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = image.shape[-2]
        w = image.shape[-1]
        pad_h = (h + self.div_h - 1) // self.div_h * self.div_h - h
        pad_w = (w + self.div_w - 1) // self.div_w * self.div_w - w
        padded = F.pad(image, [0, pad_w, 0, pad_h], mode="reflect")
        return self.net(padded)[:, :, :h, :w]


def _torchscript(
    net: nn.Module,
    divisor: tuple[int, int],
    hw: tuple[int, int],
    in_channels: int,
) -> torch.jit.ScriptModule:
    padded_hw = [v + (-v % d) for v, d in zip(hw, divisor, strict=True)]
    example = torch.randn(2, in_channels, *padded_hw)
    with torch.no_grad():
        traced = torch.jit.trace(net, example, check_trace=False)
    return torch.jit.script(_ScriptedPadding(traced, *divisor))


def export_metadata(run_cfg: Mapping[str, Any], ckpt_path: str | Path) -> dict[str, Any]:
    """What a consumer of an exported file needs from the run: classes, spacing, the intensity
    normalisation of the training data and where the weights came from."""
    if isinstance(run_cfg, DictConfig):
        run_cfg = OmegaConf.to_container(run_cfg, resolve=True)
    dataset = dict(run_cfg.get("dataset") or {})
    datamodule = dict(dataset.get("datamodule") or {})
    # The data layer (octseg.data.base.InMemorySegDataset) scales uint8 by 1/255 and uint16
    # by 1/65535, then subtracts mean and divides by std.
    norm = {
        "scale": "uint8 / 255, uint16 / 65535, float images taken as in [0, 1]",
        "mean": float(datamodule.get("mean", 0.0)),
        "std": float(datamodule.get("std", 1.0)),
    }
    return {
        "format": "octseg-export",
        "format_version": 1,
        "checkpoint": str(Path(ckpt_path).resolve()),
        "model": (run_cfg.get("model") or {}).get("net", {}).get("_target_"),
        "dataset": dataset.get("name"),
        "num_classes": dataset.get("num_classes"),
        "class_names": dataset.get("class_names"),
        "spacing_um": dataset.get("spacing_um"),
        "normalisation": norm,
    }


def format_export_summary(result: ExportResult) -> str:
    """One line per file for the console."""
    lines = [
        f"{fmt}: {path} (max |logit - PyTorch| {result.max_abs_error.get(fmt, float('nan')):.2e}"
        f" on {', '.join(f'{h}x{w}' for h, w in result.checked_hw)})"
        for fmt, path in result.files.items()
    ]
    return "\n".join(lines)
