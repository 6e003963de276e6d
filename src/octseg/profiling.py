"""Model cost figures: parameters, FLOPs, CPU latency, peak memory; benchmarks by config name.

Conventions (also in ``docs/benchmarks.md``):

* **FLOPs** — ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass: 2 FLOPs per
  multiply-add of convolutions, matmuls and attention; elementwise ops, norms and FFTs are not
  counted (FFTs of Y-Net's spectral encoder are O(N log N) and well under 1 % of its convolutions).
* **Latency** — median wall time of ``repeats`` passes after ``warmup`` passes, per B-scan
  (batch time / batch size), ``torch.inference_mode`` for forward-only, train mode with a
  backward of ``logits.float().mean()`` for forward+backward.
* **Peak memory** — growth of the process's resident set size (``/proc/self/statm``, polled every
  millisecond by a thread, or the kernel's ``ru_maxrss`` when the pass sets a new high) during
  one forward+backward pass at batch 1, measured first in a fresh process
  (:func:`benchmark_models` runs one subprocess per model). CPU PyTorch has no allocator
  statistics; RSS includes allocator caching and may miss spikes shorter than the
  polling period, so treat it as the memory a training step needs, not an exact peak.
* **torch.compile** — with ``compile=True`` the padded network is wrapped in ``torch.compile``
  (inductor). The first pass of each mode compiles; its wall time is reported separately
  (``compile_fwd_s``, ``compile_fwdbwd_s``) and kept out of the latency medians. Peak memory is
  then measured on a step after compilation, so it excludes the compiler's own memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from octseg.models.base import as_seg_output
from octseg.models.wrappers import PadToDivisor
from octseg.utils.config import compose, config_dir, group_options

__all__ = [
    "count_parameters",
    "model_config_node",
    "count_flops",
    "time_forward",
    "time_forward_backward",
    "peak_rss_delta_mb",
    "build_model_net",
    "profile_model",
    "benchmark_models",
    "model_config_names",
]

log = logging.getLogger(__name__)

BSCAN_SHAPE = (1, 1, 496, 512)


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm affine included, running statistics excluded)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def count_flops(net: nn.Module, shape: Sequence[int] = BSCAN_SHAPE) -> int:
    """FLOPs of one forward pass on zeros of ``shape`` (see the module docstring)."""
    net = _padded(net).eval()
    with torch.inference_mode(False), torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(*shape))
    return int(counter.get_total_flops())


def _padded(net: nn.Module) -> nn.Module:
    return net if isinstance(net, PadToDivisor) else PadToDivisor(net)


def _context(bf16: bool) -> Any:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


def _input(shape: Sequence[int], channels_last: bool) -> torch.Tensor:
    x = torch.randn(*shape)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _prepare(net: nn.Module, channels_last: bool) -> nn.Module:
    net = _padded(net)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def time_forward(
    net: nn.Module,
    shape: Sequence[int] = BSCAN_SHAPE,
    repeats: int = 5,
    warmup: int = 1,
    channels_last: bool = False,
    bf16: bool = False,
) -> float:
    """Median forward time in ms per sample (eval mode, inference mode).

    Args:
        net: the network (wrapped in :class:`PadToDivisor` if it is not already).
        shape: input ``[B, C, H, W]``.
        repeats: timed passes.
        warmup: untimed passes first.
        channels_last: channels-last input and weights.
        bf16: bfloat16 autocast.

    Returns:
        Milliseconds per sample.
    """
    net = _prepare(net, channels_last).eval()
    x = _input(shape, channels_last)
    times = []
    with torch.inference_mode(), _context(bf16):
        for i in range(warmup + repeats):
            start = time.perf_counter()
            net(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / shape[0]


def _train_step(net: nn.Module, x: torch.Tensor, bf16: bool) -> None:
    net.zero_grad(set_to_none=True)
    with _context(bf16):
        out = as_seg_output(net(x))
    out.logits.float().mean().backward()


def time_forward_backward(
    net: nn.Module,
    shape: Sequence[int] = BSCAN_SHAPE,
    repeats: int = 3,
    warmup: int = 1,
    channels_last: bool = False,
    bf16: bool = False,
) -> float:
    """Median forward+backward time in ms per sample (train mode); arguments as
    :func:`time_forward`."""
    net = _prepare(net, channels_last).train()
    x = _input(shape, channels_last)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        _train_step(net, x, bf16)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / shape[0]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_delta_mb(fn: Callable[[], object], interval_s: float = 0.001) -> float:
    """Peak growth of the resident set size while ``fn`` runs, in MiB (Linux ``/proc``).

    The RSS is polled by a thread; when ``fn`` sets a new lifetime high of the process, the
    kernel's exact peak (``ru_maxrss``) is used instead, so short spikes are not missed in a
    fresh process.

    Raises:
        OSError: where ``/proc/self/statm`` does not exist (not Linux).
    """
    before = _rss_bytes()
    max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = before
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(interval_s)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    peak = max(peak, _rss_bytes())
    max_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if max_after > max_before:
        peak = max(peak, max_after)
    return (peak - before) / 2**20


def model_config_node(name: str) -> DictConfig:
    """``conf/model/<name>.yaml`` merged over its ``defaults`` parent (unresolved)."""
    model_dir = config_dir() / "model"
    node = OmegaConf.load(model_dir / f"{name}.yaml")
    for parent in node.pop("defaults", []):
        # `_self_`, the shared SegModule wiring (`/model/module/...`) and objectives bound by
        # the model (`{/loss@objective: ...}` entries) carry no `net`.
        if not isinstance(parent, str) or parent == "_self_" or parent.startswith("/"):
            continue
        node = OmegaConf.merge(OmegaConf.load(model_dir / f"{parent}.yaml"), node)
    return node


def model_config_names() -> list[str]:
    """Every ``conf/model/*.yaml`` whose ``net`` is a segmenter (it predicts ``num_classes``);
    methods whose networks are not one (f-AnoGAN's GAN and encoder) are left out."""
    return [n for n in group_options("model") if "num_classes" in model_config_node(n).net]


def build_model_net(name: str, dataset: str = "synthetic") -> nn.Module:
    """Builds the ``net`` of ``conf/model/<name>.yaml`` as a run with ``dataset=<dataset>`` would.

    Raises:
        ValueError: if no such model config exists.
    """
    names = model_config_names()
    if name not in names:
        raise ValueError(f"No model config {name!r} (model={name}); available: {names}.")
    import hydra

    cfg = compose("train", [f"model={name}", f"dataset={dataset}"])
    return hydra.utils.instantiate(cfg.model.net)


def profile_model(
    name: str,
    shape: Sequence[int] = BSCAN_SHAPE,
    repeats: int = 3,
    channels_last: bool = False,
    bf16: bool = False,
    memory: bool = True,
    compile: bool = False,
) -> dict[str, Any]:
    """All figures for one model config, measured in the current process (memory first;
    ``memory=False`` drops the figure, e.g. when earlier work in the process skews RSS;
    ``compile=True`` times ``torch.compile``'d code and adds the compile times).

    Returns:
        ``{"model", "params", "flops", "cpu_fwd_ms", "cpu_fwdbwd_ms", "peak_mem_mb", ...}``.
    """
    torch.manual_seed(0)
    net = build_model_net(name)
    row: dict[str, Any] = {"model": name, "params": count_parameters(net)}
    # Training-mode passes run at batch 1 unless the net cannot (BatchNorm after a global pooling,
    # e.g. DeepLabV3+'s ASPP, needs 2 samples); the figures stay per sample.
    train_batch = 1
    padded = _prepare(net, channels_last)
    padded = (padded.compiled() if compile else padded).train()

    def train_step_at(batch: int) -> Callable[[], None]:
        x = _input((batch, *shape[1:]), channels_last)
        if compile:  # compile first, so that the memory figure is one step of compiled code
            start = time.perf_counter()
            _train_step(padded, x, bf16)
            row["compile_fwdbwd_s"] = round(time.perf_counter() - start, 1)
        return lambda: _train_step(padded, x, bf16)

    try:
        mem = peak_rss_delta_mb(train_step_at(1))
    except ValueError as err:
        if "more than 1 value per channel" not in str(err):
            raise
        train_batch = 2
        mem = peak_rss_delta_mb(train_step_at(2)) / 2
    row["peak_mem_mb"] = round(mem, 1) if memory else None
    row["flops"] = count_flops(net, shape)
    if compile:
        start = time.perf_counter()
        time_forward(padded, shape, 1, 0, channels_last, bf16)
        row["compile_fwd_s"] = round(time.perf_counter() - start, 1)
    timed = padded if compile else net
    row["cpu_fwd_ms"] = round(time_forward(timed, shape, repeats, 1, channels_last, bf16), 1)
    fwdbwd_shape = (max(shape[0], train_batch), *shape[1:])
    row["cpu_fwdbwd_ms"] = round(
        time_forward_backward(timed, fwdbwd_shape, repeats, 1, channels_last, bf16), 1
    )
    row["train_batch"] = fwdbwd_shape[0]
    row.update(
        input_shape=list(shape),
        threads=torch.get_num_threads(),
        channels_last=channels_last,
        bf16=bf16,
        compile=compile,
    )
    return row


def benchmark_models(
    names: Sequence[str] | str = "all",
    shape: Sequence[int] = BSCAN_SHAPE,
    repeats: int = 3,
    channels_last: bool = False,
    bf16: bool = False,
    isolate: bool = True,
    compile: bool = False,
) -> list[dict[str, Any]]:
    """Profiles model configs by name (``"all"`` = every ``conf/model/*.yaml``).

    Args:
        names: config names or ``"all"``.
        shape: input ``[B, C, H, W]`` (default one 496 x 512 B-scan).
        repeats: timed passes per figure.
        channels_last: channels-last memory format.
        bf16: bfloat16 autocast.
        isolate: one fresh subprocess per model, so that peak memory is not hidden by memory
            the allocator kept from an earlier model.
        compile: ``torch.compile`` the networks (compile times reported separately).

    Returns:
        One dict per model (see :func:`profile_model`); a model that fails gets ``"error"``.
    """
    selected = model_config_names() if names == "all" else list(names)
    rows = []
    for name in selected:
        log.info("Profiling model=%s", name)
        if not isolate:
            rows.append(profile_model(name, shape, repeats, channels_last, bf16, compile=compile))
            continue
        cmd = [
            sys.executable,
            "-m",
            "octseg.profiling",
            "--model",
            name,
            "--shape",
            *map(str, shape),
            "--repeats",
            str(repeats),
        ]
        cmd += ["--channels-last"] * channels_last + ["--bf16"] * bf16 + ["--compile"] * compile
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"model": name, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Profile one model config (JSON on stdout).")
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", type=int, nargs=4, default=list(BSCAN_SHAPE))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    row = profile_model(
        args.model, args.shape, args.repeats, args.channels_last, args.bf16, compile=args.compile
    )
    sys.stdout.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    _main()
