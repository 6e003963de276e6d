"""Duke DME (Chiu et al. 2015, Biomed. Opt. Express 6(4):1172): 110 B-scans of 10 DME subjects,
7 retinal layers + fluid, read from either of two folder layouts:

- OCTSeg's prepared layout, written by ``scripts/prepare_duke.py`` from the official release
  (``octseg_prepared.json`` marker, ``images/``, ``masks/``, ``boundaries/``, ``index.csv``);
- the PNG export of the Y-Net style preprocessing (``images/``, ``masks/``, optional
  ``index.csv``, no marker), e.g. ``/work/shared/datasets/duke_dme``.

Splits are by subject and come from the JSON files in ``splits/duke/`` (see ``docs/datasets.md``).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from octseg.data.base import InMemorySegDataset, SegDataModule
from octseg.data.duke_prepare import (
    FLUID_LABEL,
    MARKER_NAME,
    PREPARED_FORMAT,
    PREPARED_FORMAT_VERSION,
)
from octseg.data.transforms import TorchSeededTransform

__all__ = [
    "DukeScan",
    "DukeDataModule",
    "RepeatedDataset",
    "default_split_dir",
    "detect_layout",
    "load_duke_scans",
    "load_split",
]

log = logging.getLogger(__name__)

DukeScan = dict[str, Any]  # keys: case_id, volume_id, image, mask, boundaries (array or None)


def default_split_dir() -> Path:
    """``<repo>/splits/duke`` of the source checkout this package is installed from."""
    return Path(__file__).resolve().parents[3] / "splits" / "duke"


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
        meta = json.loads(marker.read_text())
        if (meta.get("format"), meta.get("format_version")) != (
            PREPARED_FORMAT,
            PREPARED_FORMAT_VERSION,
        ):
            raise ValueError(
                f"{marker} names format {meta.get('format')!r} version "
                f"{meta.get('format_version')!r}, but this OCTSeg reads {PREPARED_FORMAT!r} version "
                f"{PREPARED_FORMAT_VERSION}; re-run scripts/prepare_duke.py <release> {data_dir} "
                "--overwrite."
            )
        layout = "prepared"
    else:
        layout = "png_export"
    for sub in ("images", "masks"):
        if not (data_dir / sub).is_dir():
            raise FileNotFoundError(f"{data_dir} has no {sub}/ folder. {how}")
    return layout


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I;16", "I"):
                img = img.convert("L")
            return np.array(img, dtype=np.uint8)  # a writable copy (torch warns on read-only)
    except (OSError, ValueError) as err:  # unreadable, truncated or not an image at all
        raise ValueError(
            f"{path} could not be read as a PNG image ({err}); replace the file (re-export it, "
            "or re-run scripts/prepare_duke.py with --overwrite)."
        ) from err


def _scan_names(data_dir: Path) -> list[str]:
    index = data_dir / "index.csv"
    if index.is_file():
        with index.open(newline="") as f:
            names = [row["name"] for row in csv.DictReader(f)]
        for name in names:
            for sub in ("images", "masks"):
                if not (data_dir / sub / f"{name}.png").is_file():
                    raise FileNotFoundError(
                        f"{index} lists {name} but {data_dir / sub / (name + '.png')} is missing."
                    )
        return names
    return sorted(p.stem for p in (data_dir / "images").glob("Subject_*.png"))


@functools.lru_cache(maxsize=4)
def _load_cached(data_dir: str, stamp: float, ignore_index: int) -> tuple[DukeScan, ...]:
    root = Path(data_dir)
    layout = detect_layout(root)
    file_ignore = ignore_index
    if layout == "prepared":
        file_ignore = int(json.loads((root / MARKER_NAME).read_text()).get("ignore_index", 255))
    names = _scan_names(root)
    if not names:
        raise FileNotFoundError(f"{root / 'images'} holds no Subject_XX_YY.png B-scans.")
    allowed = np.array([*range(FLUID_LABEL + 1), file_ignore])
    scans = []
    for name in names:
        image = _read_png(root / "images" / f"{name}.png")
        mask = _read_png(root / "masks" / f"{name}.png")
        if image.shape != mask.shape:
            raise ValueError(
                f"{root / 'images' / name}.png is {image.shape} but its mask is {mask.shape}; "
                "an image and its mask must have the same size."
            )
        bad = np.setdiff1d(np.unique(mask), allowed)
        if bad.size:
            raise ValueError(
                f"{root / 'masks' / name}.png has labels {bad.tolist()}; expected 0..{FLUID_LABEL} "
                f"or the ignore value {file_ignore}."
            )
        if file_ignore != ignore_index:
            mask = np.where(mask == file_ignore, ignore_index, mask).astype(np.uint8)
        bounds_path = root / "boundaries" / f"{name}.npy"
        boundaries = np.load(bounds_path) if bounds_path.is_file() else None
        scans.append(
            {
                "case_id": name,
                "volume_id": name.rsplit("_", 1)[0],
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
        ``image`` uint8 ``[H, W]``, ``mask`` uint8 ``[H, W]``, ``boundaries`` float32
        ``[8, W]`` (prepared layout) or None (PNG export).

    Raises:
        FileNotFoundError, ValueError: naming the folder or file at fault.
    """
    root = Path(data_dir).resolve()
    detect_layout(root)  # raises early with a clear message
    stamp_files = [root / MARKER_NAME, root / "index.csv", root / "images"]
    stamp = max((os.stat(p).st_mtime for p in stamp_files if p.exists()), default=0.0)
    return list(_load_cached(str(root), stamp, int(ignore_index)))


def load_split(
    split: str, fold: int = 0, split_dir: str | Path | None = None
) -> dict[str, list[str]]:
    """Reads a split file and returns the subjects of one fold.

    Args:
        split: a protocol name (``ynet``, ``relaynet``, ``kfold``) looked up in ``split_dir``,
            or a path to a JSON split file.
        fold: which entry of the file's ``folds`` list.
        split_dir: folder of named split files; default ``<repo>/splits/duke``.

    Returns:
        ``{"train": [...], "val": [...], "test": [...], "file": path, "protocol": name}``.

    Raises:
        FileNotFoundError: unknown split; ValueError: bad fold or overlapping subjects.
    """
    path = Path(split)
    if path.suffix != ".json":
        path = Path(split_dir or default_split_dir()) / f"{split}.json"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise FileNotFoundError(
            f"Split file {path} not found (dataset.split={split!r}); known splits in "
            f"{path.parent}: {known}. Create one with scripts/make_splits.py."
        )
    spec = json.loads(path.read_text())
    folds = spec.get("folds", [])
    if not 0 <= fold < len(folds):
        raise ValueError(
            f"dataset.fold={fold} but {path} has {len(folds)} fold(s); use 0..{len(folds) - 1}."
        )
    entry = folds[fold]
    parts = {k: list(entry.get(k, [])) for k in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(parts[a]) & set(parts[b]))
        if shared:
            raise ValueError(f"{path} fold {fold}: subjects {shared} are in both {a} and {b}.")
    return {**parts, "file": str(path), "protocol": spec.get("protocol", path.stem)}


class RepeatedDataset(Dataset):
    """Presents a dataset ``repeats`` times per epoch (fewer, longer epochs on a tiny set)."""

    def __init__(self, dataset: Dataset, repeats: int) -> None:
        if repeats < 1:
            raise ValueError(f"train_repeats must be >= 1, got {repeats}.")
        self.dataset, self.repeats = dataset, int(repeats)

    def __len__(self) -> int:
        return len(self.dataset) * self.repeats

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[index % len(self.dataset)]


class DukeDataModule(SegDataModule):
    """Duke DME DataModule: subject-wise splits from a published split file, full B-scans for
    validation and test, an albumentations pipeline (random crops or full B-scans) for training.

    Args:
        data_dir: the ``duke_dme`` folder, either layout (relative paths are resolved against
            Hydra's original working directory).
        split: ``ynet`` (default), ``relaynet``, ``kfold`` or a path to a split JSON file.
        fold: fold of the split file (``kfold``: 0..4).
        split_dir: folder of named split files (default ``<repo>/splits/duke``).
        train_transform: albumentations-style pipeline for training samples, or None.
        mean: intensity mean after scaling to [0, 1].
        std: intensity standard deviation after scaling to [0, 1].
        train_repeats: passes over the training B-scans per epoch.
        **kwargs: :class:`~octseg.data.base.SegDataModule` arguments (``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``ignore_index``, ``pin_memory``).
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "ynet",
        fold: int = 0,
        split_dir: str | Path | None = None,
        train_transform: Callable[..., dict[str, Any]] | None = None,
        mean: float = 0.0,
        std: float = 1.0,
        train_repeats: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = Path(_absolute(str(data_dir))).resolve()
        self.split, self.fold = str(split), int(fold)
        self.split_dir = _absolute(str(split_dir)) if split_dir else None
        self.train_transform = train_transform
        self.mean, self.std, self.train_repeats = float(mean), float(std), int(train_repeats)
        self.split_info: dict[str, Any] = {}
        self.boundaries: dict[str, np.ndarray | None] = {}

    def build_datasets(self) -> dict[str, Dataset]:
        """Loads the scans, applies the split and logs which split was used."""
        info = load_split(self.split, self.fold, self.split_dir)
        scans = load_duke_scans(self.data_dir, self.ignore_index)
        present = sorted({s["volume_id"] for s in scans})
        wanted = info["train"] + info["val"] + info["test"]
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise ValueError(
                f"Split {info['file']} names subjects {missing} that {self.data_dir} does not "
                f"hold (it has {present}); check paths.data_dir or dataset.split."
            )
        self.boundaries = {s["case_id"]: s["boundaries"] for s in scans}
        transform = TorchSeededTransform(self.train_transform) if self.train_transform else None
        datasets: dict[str, Dataset] = {}
        counts = {}
        for part in ("train", "val", "test"):
            chosen = [s for s in scans if s["volume_id"] in set(info[part])]
            counts[part] = len(chosen)
            if not chosen:
                continue
            ds = InMemorySegDataset(
                [s["image"] for s in chosen],
                [s["mask"] for s in chosen],
                [s["case_id"] for s in chosen],
                [s["volume_id"] for s in chosen],
                transform=transform if part == "train" else None,
                mean=self.mean,
                std=self.std,
            )
            datasets[part] = RepeatedDataset(ds, self.train_repeats) if part == "train" else ds
        self.split_info = {**info, "fold": self.fold, "layout": detect_layout(self.data_dir)}
        log.info(
            "Duke DME split %s fold %d (%s), %s layout at %s: train %s (%d B-scans), "
            "val %s (%d), test %s (%d)",
            info["protocol"], self.fold, info["file"], self.split_info["layout"], self.data_dir,
            info["train"], counts["train"], info["val"], counts["val"], info["test"],
            counts["test"],
        )  # fmt: skip
        return datasets

    def val_dataloader(self) -> Any:
        """Full-B-scan validation loader; an empty list (Lightning skips validation) when the
        split has no validation subjects (``relaynet``)."""
        self.setup()
        return self._loader("val", train=False) if "val" in self.datasets else []


def _absolute(path: str) -> str:
    """Resolves a relative path against Hydra's original working directory when inside a run."""
    try:
        from hydra.utils import to_absolute_path

        return to_absolute_path(path)
    except (ImportError, ValueError):  # pragma: no cover - hydra absent or not initialised
        return os.path.abspath(path)
