"""Helpers shared by train.py and eval.py: sanity checks, result files, tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from octseg.models.base import as_seg_output
from octseg.models.wrappers import PadToDivisor
from octseg.utils.io import atomic_write_json

__all__ = [
    "check_model_dataset", "metrics_table", "surfaces_table", "print_metrics_table", "save_metrics"
]



def check_model_dataset(net: nn.Module, in_channels: int, num_classes: int, model_name: str = "model") -> None:
    """Runs one tiny forward pass to verify that the network takes the dataset's channels and
    predicts the dataset's classes, before any training time is spent.

    Raises:
        ValueError: naming both settings when they disagree.
    """
    wrapped = net if isinstance(net, PadToDivisor) else PadToDivisor(net)
    side = max(64, *wrapped.size_divisor)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = as_seg_output(wrapped(torch.zeros(1, in_channels, side, side)))
    except RuntimeError as err:
        if "channels" in str(err) or "size mismatch" in str(err) or "shape" in str(err):
            raise ValueError(
                f"{model_name} does not accept dataset.in_channels={in_channels} input channels "
                f"({err}). Set model.net.in_channels=${{dataset.in_channels}} or pick a matching "
                "dataset."
            ) from err
        raise
    finally:
        net.train(was_training)
    if out.logits.shape[1] != num_classes:
        raise ValueError(
            f"{model_name} predicts {out.logits.shape[1]} classes but dataset.num_classes="
            f"{num_classes}. Set model.net.num_classes=${{dataset.num_classes}} (the default) or "
            "use a dataset with that many classes."
        )


def save_metrics(path: str | Path, metrics: Mapping[str, float], extra: Mapping | None = None) -> Path:
    """Atomically writes metrics (and optional run facts) as JSON."""
    payload = {"metrics": {k: float(v) for k, v in sorted(metrics.items())}}
    if extra:
        payload.update(extra)
    return atomic_write_json(path, payload)


# Columns of the printed tables, in order; the full set is in metrics.json.
CLASS_COLUMNS = ("dice", "iou", "precision", "recall", "hd95_um", "assd_um", "thickness_mae_um",
                 "auroc")
SURFACE_COLUMNS = ("mad_um", "bias_um", "rmse_um", "max_um")


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _table(metrics: Mapping[str, float], stage: str, rows: Sequence[str], columns: Sequence[str],
           title: str, mean_label: str) -> Table | None:
    prefix = f"{stage}/"
    present = [c for c in columns if any(f"{prefix}{c}/{r}" in metrics for r in rows)]
    if not present:
        return None
    table = Table(title=title)
    table.add_column("")
    for col in present:
        table.add_column(col, justify="right")
    for row in rows:
        values = [metrics.get(f"{prefix}{c}/{row}") for c in present]
        if any(v is not None for v in values):
            table.add_row(row, *[_fmt(v) for v in values])
    table.add_row(mean_label, *[_fmt(metrics.get(f"{prefix}{c}")) for c in present],
                  end_section=True)
    return table


def metrics_table(metrics: Mapping[str, float], class_names: Sequence[str], stage: str = "test") -> Table:
    """Per-class table of the main metrics (``<stage>/<metric>/<class>``) with the suite's
    foreground mean as the last row."""
    table = _table(metrics, stage, class_names, CLASS_COLUMNS, f"{stage} metrics per class",
                   "mean (foreground)")
    return table if table is not None else Table(title=f"{stage}: no per-class metrics")


def surfaces_table(metrics: Mapping[str, float], surface_names: Sequence[str], stage: str = "test") -> Table | None:
    """Per-surface boundary errors in micrometres, or None when the suite has none."""
    return _table(metrics, stage, surface_names, SURFACE_COLUMNS,
                  f"{stage} boundary errors per surface (um)", "mean")


def print_metrics_table(
    metrics: Mapping[str, float],
    class_names: Sequence[str],
    stage: str = "test",
    surface_names: Sequence[str] = (),
) -> None:
    """Prints the per-class and per-surface tables and the scalar summaries to stdout."""
    console = Console(width=160)
    console.print(metrics_table(metrics, class_names, stage))
    surfaces = surfaces_table(metrics, surface_names, stage)
    if surfaces is not None:
        console.print(surfaces)
    scalars = {k: v for k, v in metrics.items() if k.startswith(f"{stage}/") and k.count("/") == 1}
    if scalars:
        console.print("  ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())))
