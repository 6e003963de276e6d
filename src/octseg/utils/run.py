"""Helpers shared by train.py and eval.py: sanity checks, result files, tables."""

from __future__ import annotations

import logging
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

__all__ = ["check_model_dataset", "metrics_table", "print_metrics_table", "save_metrics"]

log = logging.getLogger(__name__)


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


def metrics_table(metrics: Mapping[str, float], class_names: Sequence[str], stage: str = "test") -> Table:
    """A per-class table: one row per class, one column per metric that has per-class values
    (``<stage>/<metric>/<class>``), and a final row with the suite's mean values."""
    prefix = f"{stage}/"
    per_class: dict[str, dict[str, float]] = {}
    means: dict[str, float] = {}
    for key, value in metrics.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split("/")
        if len(parts) == 1:
            means[parts[0]] = value
        elif len(parts) == 2 and parts[1] in class_names:
            per_class.setdefault(parts[0], {})[parts[1]] = value
    columns = [m for m in per_class if len(per_class[m]) > 1]
    table = Table(title=f"{stage} metrics per class")
    table.add_column("class")
    for col in columns:
        table.add_column(col, justify="right")

    def fmt(v: float | None) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    for name in class_names:
        if any(name in per_class[c] for c in columns):
            table.add_row(name, *[fmt(per_class[c].get(name)) for c in columns])
    table.add_row("mean (foreground)", *[fmt(means.get(c)) for c in columns], end_section=True)
    return table


def print_metrics_table(metrics: Mapping[str, float], class_names: Sequence[str], stage: str = "test") -> None:
    """Prints :func:`metrics_table` and the scalar summaries to stdout."""
    console = Console(width=160)
    console.print(metrics_table(metrics, class_names, stage))
    scalars = {k: v for k, v in metrics.items() if k.startswith(f"{stage}/") and k.count("/") == 1}
    if scalars:
        console.print("  ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items())))
