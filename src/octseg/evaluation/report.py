"""The one evaluation report of OCTSeg: computing it from label maps, printing it, writing it.

``train.py`` (test of the best checkpoint), ``eval.py ckpt_path=...`` and
``eval.py pred_dir=...`` all end in :func:`evaluate_label_maps` and
:meth:`EvaluationResult.write`, so a training run's report and ``eval.py`` on its best checkpoint
are the same files in the same format:

* ``metrics.json``::

      {"format": "octseg-metrics", "format_version": 2,
       "dataset": {key: value},            # flat MetricSuite keys: dice, dice/RNFL, mad_um, ...
       "volumes": {volume_id: {key: value}},
       "settings": {...},                   # families, classes, spacing, number of scans
       "run": {...}}                        # optional: run name, checkpoint, training values
                                            # and the run's identity (:func:`run_identity`)

* ``per_scan.csv``: ``scan, class, dice, iou, precision, recall, specificity, accuracy, hd_um,
  hd95_um, assd_um, class_name``, one row per (scan, class);
* ``boundaries.csv``: ``scan, surface, mad_um, bias_um, rmse_um, max_um, surface_name``;
* ``thickness.csv``: ``scan, layer, mean_abs_err_um, layer_name`` (``layer`` = class label);
* ``uncertainty.csv``: ``scan, name, value``, only when the predictions carry named per-scan
  values (:attr:`ScanPrediction.uncertainty`, e.g. ISLAM's ``sigma_um/<surface>``); their means
  over the scans go to ``metrics.json`` under ``uncertainty``.

:func:`read_report` reads ``metrics.json`` back (for leaderboards) and checks its format.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from octseg.evaluation.label_maps import ScanPrediction
from octseg.metrics.suite import MetricSuite
from octseg.utils.io import atomic_write_csv, atomic_write_json

__all__ = [
    "BOUNDARY_COLUMNS",
    "PER_SCAN_COLUMNS",
    "REPORT_FORMAT",
    "REPORT_FORMAT_VERSION",
    "THICKNESS_COLUMNS",
    "UNCERTAINTY_COLUMNS",
    "EvaluationResult",
    "default_families",
    "evaluate_label_maps",
    "format_report",
    "read_report",
    "run_identity",
]

log = logging.getLogger(__name__)

REPORT_FORMAT = "octseg-metrics"
REPORT_FORMAT_VERSION = 2

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
UNCERTAINTY_COLUMNS = ["scan", "name", "value"]

# Columns of the printed tables, in order; the full set is in metrics.json.
CLASS_COLUMNS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "hd95_um",
    "assd_um",
    "thickness_mae_um",
    "auroc",
)
SURFACE_COLUMNS = ("mad_um", "bias_um", "rmse_um", "max_um")


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


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def _table(
    metrics: Mapping[str, float],
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
    mean_label: str,
) -> Table | None:
    present = [c for c in columns if any(f"{c}/{r}" in metrics for r in rows)]
    if not present:
        return None
    table = Table(title=title)
    table.add_column("")
    for col in present:
        table.add_column(col, justify="right")
    for row in rows:
        values = [metrics.get(f"{c}/{row}") for c in present]
        if any(v is not None for v in values):
            table.add_row(row, *[_fmt(v) for v in values])
    table.add_row(mean_label, *[_fmt(metrics.get(c)) for c in present], end_section=True)
    return table


def format_report(
    metrics: Mapping[str, float],
    class_names: Sequence[str],
    surface_names: Sequence[str] = (),
    title: str = "test",
) -> str:
    """The printed summary of a report: a per-class table (with the suite's foreground mean),
    a per-surface table of boundary errors in micrometres when there are any, and the scalar
    summaries. ``metrics`` holds flat suite keys (``dice``, ``dice/<class>``, ...)."""
    buffer = io.StringIO()
    console = Console(width=160, file=buffer)
    table = _table(
        metrics, class_names, CLASS_COLUMNS, f"{title} metrics per class", "mean (foreground)"
    )
    console.print(table if table is not None else f"{title}: no per-class metrics")
    surfaces = _table(
        metrics,
        surface_names,
        SURFACE_COLUMNS,
        f"{title} boundary errors per surface (um)",
        "mean",
    )
    if surfaces is not None:
        console.print(surfaces)
    scalars = {k: v for k, v in metrics.items() if "/" not in k}
    if scalars:
        console.print("  ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())))
    return buffer.getvalue()


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_label_maps` measured (or a module's own test values)."""

    dataset: dict[str, float]
    volumes: dict[str, dict[str, float]] = field(default_factory=dict)
    per_scan: list[dict[str, Any]] = field(default_factory=list)
    boundaries: list[dict[str, Any]] = field(default_factory=list)
    thickness: list[dict[str, Any]] = field(default_factory=list)
    uncertainty: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    surface_names: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Writes the report files atomically into ``out_dir``; returns their paths."""
        out = Path(out_dir)
        payload: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "format_version": REPORT_FORMAT_VERSION,
            "dataset": self.dataset,
            "volumes": self.volumes,
            "settings": self.settings,
        }
        if self.run:
            payload["run"] = self.run
        if self.uncertainty:
            payload["uncertainty"] = self.uncertainty_means()
        paths = {"metrics": atomic_write_json(out / "metrics.json", payload)}
        if self.per_scan:
            paths["per_scan"] = atomic_write_csv(
                out / "per_scan.csv", self.per_scan, PER_SCAN_COLUMNS
            )
        if self.boundaries:
            paths["boundaries"] = atomic_write_csv(
                out / "boundaries.csv", self.boundaries, BOUNDARY_COLUMNS
            )
        if self.thickness:
            paths["thickness"] = atomic_write_csv(
                out / "thickness.csv", self.thickness, THICKNESS_COLUMNS
            )
        if self.uncertainty:
            paths["uncertainty"] = atomic_write_csv(
                out / "uncertainty.csv", self.uncertainty, UNCERTAINTY_COLUMNS
            )
        return paths

    def uncertainty_means(self) -> dict[str, float]:
        """Mean over the scans of each named uncertainty value (NaN values skipped)."""
        values: dict[str, list[float]] = {}
        for row in self.uncertainty:
            if not math.isnan(row["value"]):
                values.setdefault(row["name"], []).append(row["value"])
        return {name: sum(v) / len(v) for name, v in values.items()}

    def format_table(self, title: str = "test") -> str:
        """The printed summary (see :func:`format_report`)."""
        return format_report(self.dataset, self.class_names, self.surface_names, title)


def run_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies a run among others (leaderboards group and pair runs by it), from its
    resolved run config: ``model`` (the ``model`` config's name), ``experiment``, ``dataset``,
    ``unlabelled`` (the dataset lending unlabelled B-scans), ``split``, ``fold`` and ``seed``;
    None where the config does not say."""
    dataset = cfg.get("dataset") or {}
    return {
        "model": cfg.get("model_name"),
        "experiment": cfg.get("experiment_name"),
        "dataset": dataset.get("name"),
        "unlabelled": (cfg.get("unlabelled") or {}).get("name"),
        "split": dataset.get("split"),
        "fold": dataset.get("fold"),
        "seed": cfg.get("seed"),
    }


def read_report(path: str | Path) -> dict[str, Any]:
    """Reads a ``metrics.json`` written by :meth:`EvaluationResult.write`.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if it is not valid JSON or not an OCTSeg report of this format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such report; runs write it at the end of testing.")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the file is damaged.") from err
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise ValueError(f"{path} is not an OCTSeg metrics report (no format {REPORT_FORMAT!r}).")
    if report.get("format_version") != REPORT_FORMAT_VERSION:
        raise ValueError(
            f"{path} has report format version {report.get('format_version')!r}; this OCTSeg "
            f"reads version {REPORT_FORMAT_VERSION}: re-run eval.py on the run's checkpoint."
        )
    return report


def evaluate_label_maps(
    scans: Iterable[ScanPrediction],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = 255,
    spacing_um: Sequence[float] | None = (1.0, 1.0),
    anatomy: Mapping[str, Any] | None = None,
    families: Sequence[str] | None = None,
    **suite_kwargs: Any,
) -> EvaluationResult:
    """Computes every applicable metric on label-map predictions.

    Args:
        scans: the predictions (any iterable; consumed once, one scan at a time). A scan's own
            ``spacing_um`` overrides ``spacing_um``.
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
    uncertainty: list[dict[str, Any]] = []
    for scan in _chain(first, iterator):
        vol = volume_ids.setdefault(scan.volume_id, len(volume_ids))
        pred = torch.as_tensor(np.asarray(scan.pred)).long()[None]
        target = torch.as_tensor(np.asarray(scan.target)).long()[None]
        probs = None if scan.probs is None else torch.as_tensor(np.asarray(scan.probs))[None]
        extra = {}
        if scan.scores is not None:
            extra["scan_scores"] = torch.as_tensor(np.asarray(scan.scores))[None]
        if scan.spacing_um is not None:
            extra["spacing_um"] = torch.tensor([list(scan.spacing_um)], dtype=torch.float64)
        suite.update(pred, target, torch.tensor([vol]), probs=probs, **extra)
        case_ids.append(scan.case_id)
        for name, value in (scan.uncertainty or {}).items():
            uncertainty.append({"scan": scan.case_id, "name": name, "value": float(value)})
    dataset = {k: _float(v) for k, v in suite.compute().items()}
    volumes = {
        name: {
            k: _float(v) for k, v in suite.compute_subset(suite.volume_index_rows == idx).items()
        }
        for name, idx in volume_ids.items()
    }
    names = suite.spec.class_names
    tables = suite.per_scan()
    result = EvaluationResult(
        dataset,
        volumes,
        _per_scan_rows(case_ids, names, tables),
        class_names=names,
        surface_names=list((anatomy or {}).get("surface_names") or []),
        settings={
            "families": suite.family_names,
            "num_classes": num_classes,
            "spacing_um": None if spacing_um is None else list(spacing_um),
            "ignore_index": ignore_index,
            "num_scans": len(case_ids),
            "class_names": names,
        },
    )
    result.uncertainty = uncertainty
    if "boundary" in tables:
        fam = suite.families["boundary"]
        b = tables["boundary"]
        result.surface_names = list(fam.surface_names)
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
