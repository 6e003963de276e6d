"""Evaluation of label-map predictions: the one place where OCTSeg's metric reports are made.

``eval.py pred_dir=... gt_dir=...`` (predictions from any tool) and ``eval.py ckpt_path=...``
(predictions of a trained model at the scans' original size) both call
:func:`evaluate_label_maps`, then :meth:`EvaluationResult.write`, which writes

* ``metrics.json``: ``{"dataset": {key: value}, "volumes": {volume_id: {key: value}},
  "settings": {...}}`` with the flat keys of :class:`~octseg.metrics.suite.MetricSuite`;
* ``per_scan.csv``: ``scan, class, dice, iou, precision, recall, specificity, accuracy, hd_um,
  hd95_um, assd_um, class_name``, one row per (scan, class);
* ``boundaries.csv``: ``scan, surface, mad_um, bias_um, rmse_um, max_um, surface_name``;
* ``thickness.csv``: ``scan, layer, mean_abs_err_um, layer_name`` (``layer`` = class label).

File matching (:func:`load_prediction_folders`): a prediction and its reference share the file
stem (``Subject_09_03.png`` <-> ``Subject_09_03.npy`` is fine). The volume id of a scan is the
stem up to its last ``_`` (``Subject_09_03`` -> ``Subject_09``), or the whole stem without one;
pass ``volume_id_fn`` to override.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from octseg.metrics.suite import MetricSuite
from octseg.utils.io import atomic_write_csv, atomic_write_json

__all__ = [
    "ScanPrediction",
    "EvaluationResult",
    "volume_id_from_name",
    "read_label_map",
    "load_prediction_folders",
    "default_families",
    "evaluate_label_maps",
    "PER_SCAN_COLUMNS",
]

log = logging.getLogger(__name__)

PER_SCAN_COLUMNS = [
    "scan",
    "class",
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "accuracy",
    "hd_um",
    "hd95_um",
    "assd_um",
    "class_name",
]
BOUNDARY_COLUMNS = ["scan", "surface", "mad_um", "bias_um", "rmse_um", "max_um", "surface_name"]
THICKNESS_COLUMNS = ["scan", "layer", "mean_abs_err_um", "layer_name"]
LABEL_EXTENSIONS = (".png", ".npy")


@dataclass
class ScanPrediction:
    """One B-scan's prediction and reference.

    Attributes:
        case_id: scan name (written in the ``scan`` column).
        volume_id: the volume/subject the scan belongs to.
        pred: predicted labels ``[H, W]``.
        target: reference labels ``[H, W]`` (``ignore_index`` where unannotated).
        probs: optional class probabilities ``[K, H, W]`` (for AUC/AP/Brier).
    """

    case_id: str
    volume_id: str
    pred: np.ndarray
    target: np.ndarray
    probs: np.ndarray | None = None


def volume_id_from_name(stem: str) -> str:
    """The part of a file stem before its last ``_`` (the whole stem if it has none)."""
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def read_label_map(path: str | Path) -> np.ndarray:
    """Reads a label PNG (8/16-bit grayscale or palette) or a 2-D ``.npy`` of integer labels.

    Raises:
        ValueError: if the file is not 2-D or holds non-integer values.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        from PIL import Image

        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(
                    f"{path}: label PNGs must be single-channel (L, P or 16-bit), got mode "
                    f"{img.mode!r}; save the label map as a grayscale image."
                )
            arr = np.array(img)
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
        if path.suffix.lower() not in LABEL_EXTENSIONS:
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
        ValueError: sizes differ or labels are out of range (the message names the file).
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
        if pred.min() < 0 or pred.max() >= num_classes:
            raise ValueError(
                f"{pred_path}: labels span [{pred.min()}, {pred.max()}] but "
                f"num_classes={num_classes}; labels must lie in [0, {num_classes})."
            )
        annotated = target[target != ignore_index] if ignore_index is not None else target
        if annotated.size and (annotated.min() < 0 or annotated.max() >= num_classes):
            raise ValueError(
                f"{ref_path}: labels span [{annotated.min()}, {annotated.max()}] "
                f"(ignore_index={ignore_index}) but num_classes={num_classes}."
            )
        scans.append(ScanPrediction(stem, volume_id_fn(stem), pred, target))
    return scans


def default_families(anatomy: Mapping[str, Any] | None, with_probabilities: bool) -> list[str]:
    """The families that apply: overlap and distance always, the anatomy-based ones when the
    anatomy defines them, probabilistic when probabilities are given."""
    anatomy = anatomy or {}
    families = ["overlap", "distance"]
    if anatomy.get("ordered_labels"):
        families += ["boundary", "topology"]
        if anatomy.get("layer_labels"):
            families.append("thickness")
    if anatomy.get("fluid_labels"):
        families.append("fluid")
    if anatomy.get("lumen_labels"):
        families.append("cvi")
    if with_probabilities:
        families.append("probabilistic")
    return families


def _float(v: Any) -> float:
    return float(v.item() if hasattr(v, "item") else v)


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_label_maps` measured."""

    dataset: dict[str, float]
    volumes: dict[str, dict[str, float]]
    per_scan: list[dict[str, Any]]
    boundaries: list[dict[str, Any]] = field(default_factory=list)
    thickness: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Writes the report files atomically into ``out_dir``; returns their paths."""
        out = Path(out_dir)
        paths = {
            "metrics": atomic_write_json(
                out / "metrics.json",
                {"dataset": self.dataset, "volumes": self.volumes, "settings": self.settings},
            ),
            "per_scan": atomic_write_csv(out / "per_scan.csv", self.per_scan, PER_SCAN_COLUMNS),
        }
        if self.boundaries:
            paths["boundaries"] = atomic_write_csv(
                out / "boundaries.csv", self.boundaries, BOUNDARY_COLUMNS
            )
        if self.thickness:
            paths["thickness"] = atomic_write_csv(
                out / "thickness.csv", self.thickness, THICKNESS_COLUMNS
            )
        return paths

    def format_table(
        self, metrics: Sequence[str] = ("dice", "iou", "precision", "recall", "hd95_um", "assd_um")
    ) -> str:
        """A per-class text table of dataset aggregates (plus the foreground mean)."""
        cols = [m for m in metrics if m in self.dataset]
        width = max([len(n) for n in self.class_names] + [10])
        lines = [f"{'class':<{width}} " + " ".join(f"{m:>10}" for m in cols)]
        for name in self.class_names + ["mean (fg)"]:
            keys = [m if name == "mean (fg)" else f"{m}/{name}" for m in cols]
            if not any(k in self.dataset for k in keys):
                continue
            cells = [self.dataset.get(k, math.nan) for k in keys]
            lines.append(f"{name:<{width}} " + " ".join(f"{c:>10.4f}" for c in cells))
        return "\n".join(lines)


def evaluate_label_maps(
    scans: Iterable[ScanPrediction],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = 255,
    spacing_um: Sequence[float] = (1.0, 1.0),
    anatomy: Mapping[str, Any] | None = None,
    families: Sequence[str] | None = None,
    **suite_kwargs: Any,
) -> EvaluationResult:
    """Computes every applicable metric on label-map predictions.

    Args:
        scans: the predictions (any iterable; consumed once, one scan at a time).
        num_classes: number of classes.
        class_names: one name per class (default ``class_<i>``).
        ignore_index: reference label of unannotated pixels.
        spacing_um: ``[axial, lateral]`` pixel spacing in micrometres.
        anatomy: the dataset's anatomy (see :class:`MetricSuite`); None for none.
        families: metric families; default :func:`default_families` (probabilistic only when
            the first scan carries probabilities).
        **suite_kwargs: further :class:`MetricSuite` arguments (``include_background``,
            ``bscan_spacing_um``, ``options``, ...).

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ValueError: when ``scans`` is empty, or as raised by :class:`MetricSuite`.
    """
    iterator = iter(scans)
    first = next(iterator, None)
    if first is None:
        raise ValueError("No scans to evaluate; check pred_dir/gt_dir or the test split.")
    families = (
        list(families)
        if families is not None
        else default_families(anatomy, first.probs is not None)
    )
    suite_kwargs.setdefault("preds_are_probabilities", True)  # ScanPrediction.probs
    suite = MetricSuite(
        families=families,
        num_classes=num_classes,
        class_names=class_names,
        ignore_index=ignore_index,
        spacing_um=spacing_um,
        anatomy=anatomy,
        **suite_kwargs,
    )
    case_ids: list[str] = []
    volume_ids: dict[str, int] = {}
    for scan in _chain(first, iterator):
        vol = volume_ids.setdefault(scan.volume_id, len(volume_ids))
        pred = torch.as_tensor(np.asarray(scan.pred)).long()[None]
        target = torch.as_tensor(np.asarray(scan.target)).long()[None]
        probs = None if scan.probs is None else torch.as_tensor(np.asarray(scan.probs))[None]
        suite.update(pred, target, torch.tensor([vol]), probs=probs)
        case_ids.append(scan.case_id)
    dataset = {k: _float(v) for k, v in suite.compute().items()}
    volumes = {
        name: {
            k: _float(v) for k, v in suite.compute_subset(suite.volume_index_rows == idx).items()
        }
        for name, idx in volume_ids.items()
    }
    names = suite.spec.class_names
    tables = suite.per_scan()
    per_scan = _per_scan_rows(case_ids, names, tables)
    result = EvaluationResult(
        dataset,
        volumes,
        per_scan,
        class_names=names,
        settings={
            "families": families,
            "num_classes": num_classes,
            "spacing_um": list(spacing_um),
            "ignore_index": ignore_index,
            "num_scans": len(case_ids),
            "class_names": names,
        },
    )
    if "boundary" in tables:
        fam = suite.families["boundary"]
        b = tables["boundary"]
        result.boundaries = [
            {
                "scan": cid,
                "surface": s,
                "surface_name": sname,
                **{k: _float(b[k][i, s]) for k in ("mad_um", "bias_um", "rmse_um", "max_um")},
            }
            for i, cid in enumerate(case_ids)
            for s, sname in enumerate(fam.surface_names)
        ]
    if "thickness" in tables:
        fam = suite.families["thickness"]
        t = tables["thickness"]["mean_abs_err_um"]
        layers = [int(v) for v in suite.spec.anatomy["layer_labels"]]
        result.thickness = [
            {
                "scan": cid,
                "layer": lab,
                "layer_name": fam.layer_names[j],
                "mean_abs_err_um": _float(t[i, j]),
            }
            for i, cid in enumerate(case_ids)
            for j, lab in enumerate(layers)
        ]
    return result


def _chain(first: ScanPrediction, rest: Iterable[ScanPrediction]) -> Iterable[ScanPrediction]:
    yield first
    yield from rest


def _per_scan_rows(
    case_ids: list[str], names: list[str], tables: dict[str, dict[str, torch.Tensor]]
) -> list[dict[str, Any]]:
    overlap = tables.get("overlap", {})
    distance = tables.get("distance", {})
    rows = []
    for i, cid in enumerate(case_ids):
        for c, name in enumerate(names):
            row: dict[str, Any] = {"scan": cid, "class": c, "class_name": name}
            for col in PER_SCAN_COLUMNS[2:-1]:
                source = distance if col.endswith("_um") else overlap
                row[col] = _float(source[col][i, c]) if col in source else math.nan
            rows.append(row)
    return rows
