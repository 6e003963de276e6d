"""Evaluation: reading and pairing label maps, predicting a split with a module, the one report
format (``metrics.json`` + CSV tables) and its printer, and checkpoint handling shared by
``eval.py``, resume in ``train.py`` and prediction; leaderboards of many runs' reports and
model cards (``leaderboard``, ``statistics``, ``model_card``). ``octseg.metrics`` computes;
this package reads and writes files."""

from __future__ import annotations

from octseg.evaluation.label_maps import (
    ScanPrediction,
    load_prediction_folders,
    read_label_map,
    volume_id_from_name,
)
from octseg.evaluation.report import (
    EvaluationResult,
    default_families,
    evaluate_label_maps,
    format_report,
    read_report,
)

__all__ = [
    "EvaluationResult",
    "ScanPrediction",
    "default_families",
    "evaluate_label_maps",
    "format_report",
    "load_prediction_folders",
    "read_label_map",
    "read_report",
    "volume_id_from_name",
]
