"""Reading new scans for prediction: image files, stacks and vendor volumes, made ready for a
trained network, and the warnings for inputs unlike the training data.

Inputs (``predict.py input=<file or folder>``; a folder's files are read one by one, sorted, and
a sub-folder holding exactly one ``.xml`` is a HEYEX XML export):

- ``.png``, ``.jpg``/``.jpeg``: one B-scan (8 or 16 bit, grey or RGB).
- ``.tif``/``.tiff``: one B-scan, or a volume when the file has several pages (one B-scan each).
- ``.npy``: ``[H, W]`` or ``[H, W, 3|4]`` one B-scan (RGB when the last axis holds at most 4
  values and the first two more than 4); ``[N, H, W]`` (or ``[N, H, W, C]``) a volume. uint8,
  uint16, or float already scaled to [0, 1].
- ``.vol``, ``.e2e``, HEYEX ``.xml`` (or its export folder), ``.fda``: a volume through
  :func:`octseg.data.vendor.read_vendor`; float reflectance is mapped to 8-bit grey with
  :func:`octseg.data.vendor.to_display` (``vendor_intensity``: ``log`` as HEYEX, or ``root``).

Channels (:func:`to_channels`), for a network trained on ``in_channels`` channels: a grey B-scan
is repeated to ``in_channels``; an RGB(A) one drops alpha and, for ``in_channels == 1``, becomes
grey by ITU-R 601 luma (``0.299 R + 0.587 G + 0.114 B``, as PIL's ``L`` mode; exact for grey
saved as RGB). Any other combination is refused.

Intensity normalisation is the data layer's own: B-scans become
:class:`~octseg.data.base.BScanRecord`\\ s and go through
:func:`~octseg.data.base.dataset_from_records` with the training datamodule's ``mean``/``std``
(uint8 / 255, uint16 / 65535, float as is, then ``(x - mean) / std``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from octseg.data.base import BScanRecord
from octseg.data.vendor import VENDOR_FORMATS, read_vendor, to_display

__all__ = [
    "IMAGE_EXTENSIONS",
    "InputScans",
    "TrainingFacts",
    "find_inputs",
    "input_warnings",
    "read_input",
    "to_channels",
    "to_records",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
# ITU-R 601 luma weights (PIL's RGB -> L conversion).
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass
class InputScans:
    """The B-scans of one input file, as stored (after vendor intensity mapping).

    Attributes:
        name: output name (the file stem; the folder name for a HEYEX export folder).
        path: the file (or export folder) read.
        bscans: ``[H, W]`` or ``[H, W, C]`` arrays, uint8, uint16 or float32 in [0, 1].
        is_volume: several B-scans of one eye (multi-page TIFF, 3-D ``.npy``, vendor file).
        spacing_um: ``(axial, lateral, between B-scans)`` from the file (NaN unknown), or None
            when the file stores none (images, stacks).
        laterality: ``OD``/``OS`` from a vendor file, else None.
        kind: ``image``, ``stack`` or the vendor format name.
        meta: vendor extras (B-scan positions in mm).
    """

    name: str
    path: Path
    bscans: list[np.ndarray]
    is_volume: bool
    spacing_um: tuple[float, float, float] | None = None
    laterality: str | None = None
    kind: str = "image"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingFacts:
    """What the checkpoint's run config says about its training data, for input checks.

    Attributes:
        dataset: the dataset name.
        spacing_um: ``(axial, lateral)`` micrometres per pixel, or None when unknown.
        mean: intensity mean after scaling to [0, 1] (``dataset.datamodule.mean``).
        std: its standard deviation; ``mean == 0`` and ``std == 1`` mean "not normalised" (no
            statistics known).
        size_hw: the training B-scan size when the config fixes one (synthetic data), or None.
    """

    dataset: str
    spacing_um: tuple[float, float] | None
    mean: float
    std: float
    size_hw: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, dataset_cfg: Mapping[str, Any]) -> TrainingFacts:
        """Reads the facts from a run config's ``dataset`` node."""
        dm = dataset_cfg.get("datamodule") or {}
        spacing = dataset_cfg.get("spacing_um")
        height, width = dm.get("height"), dm.get("width")
        return cls(
            dataset=str(dataset_cfg.get("name")),
            spacing_um=None if spacing is None else (float(spacing[0]), float(spacing[1])),
            mean=float(dm.get("mean", 0.0)),
            std=float(dm.get("std", 1.0)),
            size_hw=(int(height), int(width)) if height and width else None,
        )

    @property
    def has_statistics(self) -> bool:
        return not (self.mean == 0.0 and self.std == 1.0)


def find_inputs(path: str | Path) -> list[Path]:
    """The inputs under ``path``: the file itself, or a folder's readable files (sorted) and
    HEYEX export sub-folders.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a file of unknown type, or a folder with nothing to read (naming what
            it holds).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"input={path}: no such file or folder; give a B-scan, a volume file or a folder."
        )
    known = (*IMAGE_EXTENSIONS, *VENDOR_FORMATS)
    if path.is_file():
        if path.suffix.lower() not in known:
            raise ValueError(
                f"input={path}: unknown file type {path.suffix!r}; expected one of {known}."
            )
        return [path]
    if _is_heyex_folder(path):
        return [path]
    found = [
        p
        for p in sorted(path.iterdir())
        if not p.name.startswith(".")
        and ((p.is_file() and p.suffix.lower() in known) or (p.is_dir() and _is_heyex_folder(p)))
    ]
    if not found:
        names = sorted(p.name for p in path.iterdir())[:10]
        raise ValueError(
            f"input={path} holds no B-scan or volume file (found {names}); expected files "
            f"ending in {known} or HEYEX XML export folders."
        )
    return found


def _is_heyex_folder(path: Path) -> bool:
    return path.is_dir() and len([p for p in path.iterdir() if p.suffix.lower() == ".xml"]) == 1


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        mode = img.mode
        if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGBA" if "A" in mode or "transparency" in img.info else "RGB")
        elif mode in ("1", "LA"):
            img = img.convert("L")
        array = np.array(img)
    if array.dtype == np.int32 and array.size and array.min() >= 0 and array.max() <= 65535:
        array = array.astype(np.uint16)  # PIL opens 16-bit PNGs as 32-bit integers
    return array


def _read_tiff_pages(path: Path) -> list[np.ndarray]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return [page.asarray() for page in tif.pages]


def _split_npy(array: np.ndarray, path: Path) -> tuple[list[np.ndarray], bool]:
    if array.ndim == 2:
        return [array], False
    if array.ndim == 3 and array.shape[2] <= 4 and min(array.shape[:2]) > 4:
        return [array], False
    if array.ndim in (3, 4):
        return list(array), True
    raise ValueError(
        f"{path}: array of shape {array.shape}; expected a B-scan [H, W] (or [H, W, 3]) or a "
        "volume [N, H, W] (or [N, H, W, C])."
    )


def _checked(array: np.ndarray, path: Path, index: int | None) -> np.ndarray:
    where = f"{path}" + ("" if index is None else f" (B-scan {index})")
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] > 4:
        array = np.moveaxis(array, 0, -1)  # planar RGB (TIFF "separate" samples)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(
            f"{where}: image of shape {array.shape}; expected grey [H, W] or RGB [H, W, 3]."
        )
    if array.dtype in _SCALE:
        return array
    if array.dtype.kind == "f":
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        if not np.isfinite(array).all() or lo < 0 or hi > 1:
            raise ValueError(
                f"{where}: float image with values {lo:g}..{hi:g} (or NaN); float B-scans must "
                "be scaled to [0, 1] (or save them as uint8/uint16)."
            )
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.size and array.min() >= 0 and array.max() <= 65535:
        return array.astype(np.uint8 if array.max() <= 255 else np.uint16)
    raise ValueError(
        f"{where}: image dtype {array.dtype}; expected uint8, uint16 or float in [0, 1]."
    )


def read_input(path: str | Path, vendor_intensity: str = "log") -> InputScans:
    """Reads one input (see the module docstring).

    Args:
        path: an image, stack or vendor file, or a HEYEX XML export folder.
        vendor_intensity: ``log`` or ``root``, the mapping of vendor float reflectance to grey.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, if it cannot be decoded or holds no usable B-scan.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist.")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in VENDOR_FORMATS:
        volume = read_vendor(path)
        grey = to_display(volume.bscans, mapping=vendor_intensity)
        return InputScans(
            name=path.stem if path.is_file() else path.name,
            path=path,
            bscans=[_checked(b, path, i) for i, b in enumerate(grey)],
            is_volume=len(grey) > 1,
            spacing_um=volume.spacing_um,
            laterality=volume.laterality,
            kind=volume.format,
            meta=dict(volume.meta),
        )
    try:
        if suffix == ".npy":
            arrays, is_volume = _split_npy(np.load(path, allow_pickle=False), path)
        elif suffix in (".tif", ".tiff"):
            arrays = _read_tiff_pages(path)
            is_volume = len(arrays) > 1
        else:
            arrays, is_volume = [_read_pil(path)], False
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path} could not be read ({err}).") from err
    except (OSError, EOFError) as err:
        raise ValueError(
            f"{path} could not be read ({type(err).__name__}: {err}); the file is damaged or "
            "not of the type its name says."
        ) from err
    if not arrays:
        raise ValueError(f"{path} holds no image.")
    bscans = [_checked(a, path, i if is_volume else None) for i, a in enumerate(arrays)]
    if is_volume and len({b.shape[:2] for b in bscans}) > 1:
        raise ValueError(
            f"{path}: the B-scans of the volume differ in size "
            f"{sorted({b.shape[:2] for b in bscans})}; a volume's B-scans share one size."
        )
    return InputScans(
        name=path.stem,
        path=path,
        bscans=bscans,
        is_volume=is_volume,
        kind="stack" if is_volume else "image",
    )


def to_channels(image: np.ndarray, in_channels: int, source: str) -> np.ndarray:
    """A B-scan with the network's number of channels (the rule in the module docstring).

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` (uint8, uint16 or float32).
        in_channels: the network's input channels.
        source: the file, for error messages.

    Returns:
        ``[H, W]`` for one channel, else ``[H, W, in_channels]``, in the input's dtype.

    Raises:
        ValueError: when the channels cannot be matched.
    """
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]  # alpha carries no OCT signal
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == in_channels:
        return image
    if channels == 1:
        return np.repeat(image[..., None], in_channels, axis=2)
    if channels == 3 and in_channels == 1:
        if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(
            image[..., 0], image[..., 2]
        ):
            return image[..., 0]
        luma = image.astype(np.float64) @ _LUMA
        if image.dtype.kind == "f":
            return luma.astype(np.float32)
        return np.round(luma).astype(image.dtype)
    raise ValueError(
        f"{source}: a {channels}-channel image, but the network takes {in_channels} channels "
        "(dataset.in_channels of the checkpoint); convert the images to grey or RGB."
    )


def to_records(
    scans: InputScans,
    in_channels: int,
    spacing_um: tuple[float, float, float] | None,
) -> list[BScanRecord]:
    """The input's B-scans as data-layer records (case ids ``<name>`` for a single B-scan,
    ``<name>_<index>`` in a volume)."""
    records = []
    for i, bscan in enumerate(scans.bscans):
        case_id = f"{scans.name}_{i:03d}" if scans.is_volume else scans.name
        records.append(
            BScanRecord(
                image=to_channels(bscan, in_channels, str(scans.path)),
                mask=None,
                case_id=case_id,
                volume_id=scans.name,
                bscan_index=i if scans.is_volume else -1,
                spacing_um=spacing_um,
            )
        )
    return records


def _scaled(bscans: Sequence[np.ndarray]) -> np.ndarray:
    # A strided sample keeps the statistics cheap on large volumes.
    sample = np.concatenate([np.asarray(b, np.float64).ravel()[::7] for b in bscans])
    return sample / _SCALE.get(bscans[0].dtype, 1.0)


def input_warnings(
    scans: InputScans,
    training: TrainingFacts,
    spacing_um: tuple[float, float, float] | None,
) -> list[str]:
    """How an input differs from the training data (empty when it does not, as far as known).

    Checks the intensity (mean after scaling to [0, 1] against the training mean, when the
    dataset has statistics; 16-bit files that use 8 bits; mostly black or saturated scans),
    the B-scan size (when the training config fixes one) and the pixel spacing (more than
    10 % off, when both are known).

    Args:
        scans: the input.
        training: the checkpoint's training facts.
        spacing_um: the spacing used for the input (its own or the ``spacing_um`` setting), or
            None when unknown.
    """
    where = str(scans.path)
    out: list[str] = []
    values = _scaled(scans.bscans)
    mean = float(values.mean())
    if scans.bscans[0].dtype == np.uint16 and max(int(b.max()) for b in scans.bscans) <= 255:
        out.append(
            f"{where}: a 16-bit image whose values stay within 0..255; it is scaled by 1/65535 "
            "as 16-bit data, so the network sees an almost black scan. Save 8-bit data as "
            "8-bit (uint8)."
        )
    elif training.has_statistics and abs(mean - training.mean) > 0.5 * training.std:
        out.append(
            f"{where}: mean intensity {mean:.3f} (scaled to [0, 1]) while the training data "
            f"({training.dataset}) has {training.mean:.3f} +- {training.std:.3f}; the scan is "
            f"{'brighter' if mean > training.mean else 'darker'} than what the network was "
            "trained on (another device, bit depth or intensity mapping), so expect worse "
            "segmentations."
        )
    saturated = float((values >= 1.0).mean())
    if saturated > 0.2:
        out.append(f"{where}: {saturated:.0%} of the pixels are saturated (at the maximum value).")
    if float((values <= 0.0).mean()) > 0.9:
        out.append(f"{where}: {float((values <= 0).mean()):.0%} of the pixels are zero.")
    height, width = scans.bscans[0].shape[:2]
    if training.size_hw is not None and (height, width) != training.size_hw:
        th, tw = training.size_hw
        out.append(
            f"{where}: B-scans of {height} x {width} pixels while the training B-scans are "
            f"{th} x {tw}; the network runs at any size, but a different field of view or "
            "sampling may change its output."
        )
    if spacing_um is not None and training.spacing_um is not None:
        for axis, got, want in zip(("axial", "lateral"), spacing_um[:2], training.spacing_um,
                                   strict=False):  # fmt: skip
            if math.isfinite(got) and abs(got / want - 1.0) > 0.1:
                out.append(
                    f"{where}: {axis} spacing {got:.2f} um per pixel while the training data "
                    f"({training.dataset}) has {want:.2f}; structures appear "
                    f"{want / got:.2f} times as {'tall' if axis == 'axial' else 'wide'} as in "
                    "training (resample the scans, or expect worse segmentations)."
                )
    return out
