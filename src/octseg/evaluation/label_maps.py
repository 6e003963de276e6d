"""Reading label maps and pairing predictions with references, for evaluation from files.

A prediction and its reference share the file stem (``Subject_09_03.png`` <->
``Subject_09_03.npy`` is fine; the extension's case does not matter). The volume id of a scan is
the stem up to its last ``_`` (``Subject_09_03`` -> ``Subject_09``), or the whole stem without one;
pass ``volume_id_fn`` to override.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "LABEL_EXTENSIONS",
    "check_label_range",
    "ScanPrediction",
    "load_prediction_folders",
    "read_label_map",
    "volume_id_from_name",
]

LABEL_EXTENSIONS = (".png", ".npy")


@dataclass
class ScanPrediction:
    """One B-scan's prediction and reference.

    Attributes:
        case_id: scan name (written in the ``scan`` column of the reports).
        volume_id: the volume/subject the scan belongs to.
        pred: predicted labels ``[H, W]``.
        target: reference labels ``[H, W]`` (``ignore_index`` where unannotated).
        probs: optional class probabilities ``[K, H, W]`` (for AUC/AP/Brier).
        spacing_um: optional ``(axial, lateral[, between B-scans])`` spacing of this scan in
            micrometres; None uses the suite's configured spacing.
        scores: optional ``[K]`` score of the whole scan per class (e.g. an anomaly score;
            NaN where none), for image-level metrics (the ``detection`` family).
        uncertainty: optional named per-scan values a method reports about its own prediction
            (e.g. ISLAM's ``sigma_um/<surface>``), written to ``uncertainty.csv``.
    """

    case_id: str
    volume_id: str
    pred: np.ndarray
    target: np.ndarray
    probs: np.ndarray | None = None
    spacing_um: tuple[float, ...] | None = None
    scores: np.ndarray | None = None
    uncertainty: dict[str, float] | None = None


def volume_id_from_name(stem: str) -> str:
    """The part of a file stem before its last ``_`` (the whole stem if it has none)."""
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def _load_array(path: Path) -> np.ndarray:
    """Decodes a ``.npy`` or image file; every decoder failure becomes a ValueError naming it."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        from PIL import Image

        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(
                    f"{path}: label PNGs must be single-channel (L, P or 16-bit), got mode "
                    f"{img.mode!r}; save the label map as a grayscale image."
                )
            return np.array(img)
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(
            f"{path} could not be read as a label map ({err}); re-export it."
        ) from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:  # truncated or not that format at all
        raise ValueError(
            f"{path} could not be read as a label map ({type(err).__name__}: {err}); the file is "
            "damaged or not a PNG/.npy label map: re-export it."
        ) from err


def read_label_map(path: str | Path) -> np.ndarray:
    """Reads a label PNG (8/16-bit grayscale or palette) or a 2-D ``.npy`` of integer labels.

    Raises:
        ValueError: if the file cannot be decoded, is not 2-D or holds non-integer values
            (the message names the file).
    """
    path = Path(path)
    arr = _load_array(path)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D label map [H, W], got shape {arr.shape}.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{path}: label maps must hold integer labels, got non-integer "
                "floats; save argmax labels, not probabilities."
            )
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{path}: unsupported dtype {arr.dtype} for a label map.")
    return arr.astype(np.int64)


def _index_folder(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{role} folder {folder} does not exist; check {role}=.")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in LABEL_EXTENSIONS or not path.is_file():
            continue
        if path.stem in files:
            raise ValueError(
                f"{role} folder has both {files[path.stem].name} and {path.name}; "
                "keep one label map per scan."
            )
        files[path.stem] = path
    if not files:
        raise FileNotFoundError(
            f"No label maps ({', '.join(LABEL_EXTENSIONS)}) in {role} folder {folder}."
        )
    return files


def check_label_range(
    labels: np.ndarray, num_classes: int, path: Path | str, ignore_index: int | None = None
) -> None:
    """Raises a ValueError naming ``path`` if a label (other than ``ignore_index``) lies outside
    ``[0, num_classes)``."""
    values = labels[labels != ignore_index] if ignore_index is not None else labels
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"{path}: labels span [{values.min()}, {values.max()}] (ignore_index={ignore_index}) "
            f"but num_classes={num_classes}; labels must lie in [0, {num_classes})."
        )


def load_prediction_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    num_classes: int,
    ignore_index: int | None = 255,
    volume_id_fn: Callable[[str], str] = volume_id_from_name,
) -> list[ScanPrediction]:
    """Pairs prediction and reference label maps by file stem.

    Args:
        pred_dir: folder of predicted label maps (``.png`` / ``.npy``).
        gt_dir: folder of reference label maps.
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        ignore_index: reference label of unannotated pixels (allowed in references only).
        volume_id_fn: maps a file stem to its volume id.

    Returns:
        One :class:`ScanPrediction` per reference file, sorted by name.

    Raises:
        FileNotFoundError: a folder is missing or empty, or a file has no counterpart.
        ValueError: a file is damaged, sizes differ or labels are out of range (the message
            names the file).
    """
    preds = _index_folder(Path(pred_dir), "pred_dir")
    refs = _index_folder(Path(gt_dir), "gt_dir")
    missing = sorted(set(refs) - set(preds))
    extra = sorted(set(preds) - set(refs))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} reference scans have no prediction in {pred_dir}, e.g. "
            f"{[refs[m].name for m in missing[:5]]}; predictions must share the file stem."
        )
    if extra:
        raise FileNotFoundError(
            f"{len(extra)} predictions have no reference in {gt_dir}, e.g. "
            f"{[preds[e].name for e in extra[:5]]}; check gt_dir or remove them."
        )
    scans = []
    for stem, ref_path in refs.items():
        pred_path = preds[stem]
        pred, target = read_label_map(pred_path), read_label_map(ref_path)
        if pred.shape != target.shape:
            raise ValueError(
                f"{pred_path} is {pred.shape} but its reference {ref_path} is "
                f"{target.shape}; predict at the scan's original size."
            )
        check_label_range(pred, num_classes, pred_path)
        check_label_range(target, num_classes, ref_path, ignore_index)
        scans.append(ScanPrediction(stem, volume_id_fn(stem), pred, target))
    return scans
