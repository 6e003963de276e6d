"""Duke DME (Chiu et al. 2015, Biomed. Opt. Express 6(4):1172): 110 B-scans of 10 DME subjects,
7 retinal layers + fluid, read from either of two folder layouts:

- OCTSeg's prepared layout, written by ``scripts/prepare_duke.py`` from the official release
  (``octseg_prepared.json`` marker, ``images/``, ``masks/``, ``boundaries/``, ``index.csv``);
- the PNG export of the Y-Net style preprocessing (``images/``, ``masks/``, optional
  ``index.csv``, no marker), e.g. ``/work/shared/datasets/duke_dme``.

Splits are by subject and come from the JSON files in ``splits/duke/`` (see ``docs/datasets.md``);
splitting, augmentation, repetition and loaders come from :class:`~octseg.data.base.SegDataModule`.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from octseg.data.base import BScanRecord, SegDataModule
from octseg.data.duke_prepare import (
    FLUID_LABEL,
    MARKER_NAME,
    PREPARED_FORMAT,
    PREPARED_FORMAT_VERSION,
)

__all__ = ["DukeScan", "DukeDataModule", "detect_layout", "load_duke_scans"]

log = logging.getLogger(__name__)

DukeScan = dict[str, Any]  # case_id, volume_id, bscan_index, image, mask, boundaries (or None)


_SCAN_NAME = re.compile(r"Subject_\d+_\d+")
# PIL modes of single-channel PNGs read in their native dtype (8 or 16 bit).
_NATIVE_MODES = ("L", "I", "I;16", "I;16B", "I;16L")


def _read_marker(marker: Path) -> dict[str, Any]:
    try:
        meta = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{marker} is damaged ({err}); re-run scripts/prepare_duke.py <release> "
            f"{marker.parent} --overwrite."
        ) from err
    if not isinstance(meta, dict):
        raise ValueError(
            f"{marker} holds {type(meta).__name__}, expected a JSON object; re-run "
            f"scripts/prepare_duke.py <release> {marker.parent} --overwrite."
        )
    return meta


def detect_layout(data_dir: str | Path) -> str:
    """Tells which Duke layout a folder holds.

    Returns:
        ``"prepared"`` (marker present and current) or ``"png_export"``.

    Raises:
        FileNotFoundError: if the folder or its ``images/``/``masks/`` are missing.
        ValueError: if the marker names another format or format version.
    """
    data_dir = Path(data_dir)
    how = (
        "Set paths.data_dir to the folder holding duke_dme/ (e.g. paths.data_dir=../shared/"
        "datasets or OCTSEG_DATA_DIR), or prepare the release with scripts/prepare_duke.py."
    )
    if not data_dir.is_dir():
        raise FileNotFoundError(f"Duke DME folder {data_dir} does not exist. {how}")
    marker = data_dir / MARKER_NAME
    if marker.is_file():
        meta = _read_marker(marker)
        if (meta.get("format"), meta.get("format_version")) != (
            PREPARED_FORMAT,
            PREPARED_FORMAT_VERSION,
        ):
            raise ValueError(
                f"{marker} names format {meta.get('format')!r} version "
                f"{meta.get('format_version')!r}, but this OCTSeg reads {PREPARED_FORMAT!r} "
                f"version {PREPARED_FORMAT_VERSION}; re-run scripts/prepare_duke.py <release> "
                f"{data_dir} --overwrite."
            )
        layout = "prepared"
    else:
        layout = "png_export"
    for sub in ("images", "masks"):
        if not (data_dir / sub).is_dir():
            raise FileNotFoundError(f"{data_dir} has no {sub}/ folder. {how}")
    return layout


def _read_png(path: Path, kind: str) -> np.ndarray:
    """Reads one PNG in its native dtype: uint8, or uint16 for 16-bit files (never wrapped to
    8 bit). Images of other modes (RGB, palette, ...) are converted to 8-bit grey; a mask must
    be a single-channel label map (8/16 bit or palette indices)."""
    native = _NATIVE_MODES + (("P",) if kind == "mask" else ())
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in native and kind == "image":
                img = img.convert("L")
            array = np.array(img)  # a writable copy (torch warns on read-only)
    except (OSError, SyntaxError, ValueError) as err:  # unreadable, truncated, not an image
        raise ValueError(
            f"{path} could not be read as a PNG image ({err}); replace the file (re-export it, "
            "or re-run scripts/prepare_duke.py with --overwrite)."
        ) from err
    if mode not in native and kind == "mask":
        raise ValueError(
            f"{path} is a {mode} image; a mask must be a single-channel label PNG (8 or 16 "
            "bit). Re-export it."
        )
    if array.dtype != np.uint8:  # 16-bit modes come as uint16, big-endian uint16 or int32
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"{path} holds values outside 0..65535; expected an 8/16-bit PNG.")
        array = array.astype(np.uint16)
    return array


def _png_files(folder: Path) -> dict[str, Path]:
    """Scan name -> file for every ``Subject_XX_YY.png`` in ``folder`` (suffix in any case)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".png" or not _SCAN_NAME.fullmatch(path.stem):
            continue
        if path.stem in files:
            raise ValueError(
                f"{folder} holds both {files[path.stem].name} and {path.name}; keep one."
            )
        files[path.stem] = path
    return files


def _index_rows(index: Path) -> list[dict[str, str]]:
    """Rows of ``index.csv``, checked for a ``name`` column and unique names."""
    with index.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    if "name" not in columns:
        raise ValueError(
            f"{index} has no 'name' column (columns: {columns}); its first line must name the "
            "columns, one of them 'name' (the scan file name without .png). Fix or delete it."
        )
    lines: dict[str, list[int]] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        lines.setdefault(row["name"], []).append(line)
    duplicates = {name: at for name, at in lines.items() if len(at) > 1}
    if duplicates:
        raise ValueError(
            f"{index} lists scans more than once (name: lines) {duplicates}; each B-scan must "
            "appear once. Remove the repeated rows."
        )
    return rows


def _scan_files(data_dir: Path) -> list[tuple[str, Path, Path, int]]:
    """``(name, image path, mask path, bscan index)`` of every B-scan, checked for pairs."""
    images, masks = _png_files(data_dir / "images"), _png_files(data_dir / "masks")
    unpaired = {
        "images without a mask": sorted(set(images) - set(masks)),
        "masks without an image": sorted(set(masks) - set(images)),
    }
    unpaired = {k: v for k, v in unpaired.items() if v}
    if unpaired:
        raise ValueError(
            f"{data_dir}: {unpaired}; every images/<name>.png needs masks/<name>.png and the "
            "reverse. Add or remove the files."
        )
    index = data_dir / "index.csv"
    if not index.is_file():
        return [(name, images[name], masks[name], -1) for name in sorted(images)]
    scans = []
    for row in _index_rows(index):
        name = row["name"]
        if name not in images:
            raise FileNotFoundError(
                f"{index} lists {name} but {data_dir / 'images' / (name + '.png')} is missing."
            )
        position = row.get("bscan_index") or ""
        scans.append((name, images[name], masks[name], int(position) if position else -1))
    return scans


@functools.lru_cache(maxsize=4)
def _load_cached(data_dir: str, stamp: float, ignore_index: int) -> tuple[DukeScan, ...]:
    root = Path(data_dir)
    layout = detect_layout(root)
    file_ignore = ignore_index
    if layout == "prepared":
        file_ignore = int(_read_marker(root / MARKER_NAME).get("ignore_index", 255))
    files = _scan_files(root)
    if not files:
        raise FileNotFoundError(f"{root / 'images'} holds no Subject_XX_YY.png B-scans.")
    allowed = np.array([*range(FLUID_LABEL + 1), file_ignore])
    mask_dtype = np.uint8 if ignore_index < 256 else np.int32
    scans = []
    for name, image_path, mask_path, position in files:
        image = _read_png(image_path, "image")
        mask = _read_png(mask_path, "mask")
        if image.shape != mask.shape:
            raise ValueError(
                f"{image_path} is {image.shape} but its mask is {mask.shape}; "
                "an image and its mask must have the same size."
            )
        bad = np.setdiff1d(np.unique(mask), allowed)
        if bad.size:
            raise ValueError(
                f"{mask_path} has labels {bad.tolist()}; expected 0..{FLUID_LABEL} "
                f"or the ignore value {file_ignore}."
            )
        mask = np.where(mask == file_ignore, ignore_index, mask).astype(mask_dtype)
        bounds_path = root / "boundaries" / f"{name}.npy"
        boundaries = np.load(bounds_path) if bounds_path.is_file() else None
        scans.append(
            {
                "case_id": name,
                "volume_id": name.rsplit("_", 1)[0],
                "bscan_index": position,
                "image": image,
                "mask": mask,
                "boundaries": boundaries,
            }
        )
    return tuple(scans)


def load_duke_scans(data_dir: str | Path, ignore_index: int = 255) -> list[DukeScan]:
    """Decodes every B-scan of a Duke folder (either layout) once per process.

    Args:
        data_dir: the ``duke_dme`` folder.
        ignore_index: value wanted for unannotated pixels (a prepared folder's own value is
            remapped to it).

    Returns:
        One dict per B-scan: ``case_id`` (``Subject_XX_YY``), ``volume_id`` (``Subject_XX``),
        ``bscan_index`` (position among the volume's 61 B-scans from ``index.csv``, -1 when
        the folder does not say), ``image`` ``[H, W]`` (uint8, or uint16 for 16-bit PNGs),
        ``mask`` uint8 ``[H, W]``, ``boundaries`` float32 ``[8, W]`` (prepared layout) or
        None (PNG export).

    Raises:
        FileNotFoundError, ValueError: naming the folder or file at fault.
    """
    root = Path(data_dir).resolve()
    detect_layout(root)  # raises early with a clear message
    stamp_files = [root / MARKER_NAME, root / "index.csv", root / "images", root / "masks"]
    stamp = max((os.stat(p).st_mtime for p in stamp_files if p.exists()), default=0.0)
    return list(_load_cached(str(root), stamp, int(ignore_index)))


class DukeDataModule(SegDataModule):
    """Duke DME DataModule: reads either layout as volumes (one per subject); splits,
    augmentation, repetition and loaders come from :class:`~octseg.data.base.SegDataModule`.

    Args:
        data_dir: the ``duke_dme`` folder, either layout (relative paths are resolved against
            Hydra's original working directory).
        split: ``ynet`` (default), ``relaynet``, ``kfold`` or a path to a split JSON file.
        fold: fold of the split file (``kfold``: 0..4).
        split_dir: folder of named split files (default ``<repo>/splits/duke``).
        **kwargs: :class:`~octseg.data.base.SegDataModule` arguments (``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``ignore_index``, ``pin_memory``,
            ``train_transform``, ``mean``, ``std``, ``train_repeats``, ``spacing_um``,
            ``bscan_spacing_um``).
    """

    splits_name = "duke"

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "ynet",
        fold: int = 0,
        split_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        split_dir = _absolute(str(split_dir)) if split_dir else None
        super().__init__(split=str(split), fold=fold, split_dir=split_dir, **kwargs)
        self.data_dir = Path(_absolute(str(data_dir))).resolve()
        self.boundaries: dict[str, np.ndarray | None] = {}

    def read_volumes(self) -> Iterator[Sequence[BScanRecord]]:
        """Yields the traced B-scans of one subject at a time (spacing: the DataModule's)."""
        scans = load_duke_scans(self.data_dir, self.ignore_index)
        self.boundaries = {s["case_id"]: s["boundaries"] for s in scans}
        volumes: dict[str, list[BScanRecord]] = {}
        for s in scans:
            volumes.setdefault(s["volume_id"], []).append(
                BScanRecord(s["image"], s["mask"], s["case_id"], s["volume_id"], s["bscan_index"])
            )
        yield from volumes.values()

    def describe_source(self) -> str:
        return f"{detect_layout(self.data_dir)} layout at {self.data_dir}"

    def build_datasets(self) -> dict[str, Dataset]:
        """Loads the scans, applies the split and logs which split was used."""
        datasets = super().build_datasets()
        self.split_info["layout"] = detect_layout(self.data_dir)
        return datasets


def _absolute(path: str) -> str:
    """Resolves a relative path against Hydra's original working directory when inside a run."""
    try:
        from hydra.utils import to_absolute_path

        return to_absolute_path(path)
    except (ImportError, ValueError):  # pragma: no cover - hydra absent or not initialised
        return os.path.abspath(path)
