"""Topology of a predicted layer map: columns whose regions are out of order.

Family ``topology``: ``topology_violation_rate`` = fraction of the columns where the reference is
defined whose predicted ranks (fluid filled as in :func:`~octseg.metrics.surfaces.label_ranks`)
decrease somewhere from top to bottom, pooled over the dataset or per volume (``volume/``: mean
over volumes). :func:`order_violation_rate` measures the same on label maps without a reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from octseg.metrics._base import (
    BatchContext,
    MetricFamily,
    SuiteSpec,
    nanmean0,
    register_family,
    require_anatomy,
    safe_div,
    volume_sum,
)
from octseg.metrics.surfaces import label_ranks

__all__ = ["order_violation_rate", "topology_violation_counts", "TopologyFamily"]


def topology_violation_counts(rank: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Columns whose regions are out of order (which includes a layer split by a hole).

    A column is clean when the ranks (fluid filled as in
    :func:`~octseg.metrics.surfaces.label_ranks`) never decrease from top to bottom, i.e. every
    region occupies one contiguous run in the right order.

    Args:
        rank: filled ranks ``[B, H, W]`` of the prediction (``surfaces.label_ranks``).
        valid: bool ``[B, W]`` columns to count (where the reference is defined).

    Returns:
        float64 ``[B, 2]``: (violating columns, counted columns).
    """
    bad = (rank[:, 1:] < rank[:, :-1]).any(dim=1) & valid
    return torch.stack([bad.sum(-1).double(), valid.sum(-1).double()], dim=-1)


def order_violation_rate(
    labels: torch.Tensor, ordered_labels: Sequence[int], valid: torch.Tensor | None = None
) -> float:
    """Fraction of columns whose regions are out of order (as the ``topology`` family counts).

    Args:
        labels: integer label maps ``[H, W]`` or ``[B, H, W]`` (non-negative).
        ordered_labels: region labels top to bottom (``anatomy.ordered_labels``).
        valid: optional bool ``[W]`` or ``[B, W]`` columns to count; default every column that
            holds at least one ordered label.

    Returns:
        The violating fraction of the counted columns (NaN when none is counted).
    """
    batch = labels if labels.dim() == 3 else labels[None]
    rank, defined = label_ranks(batch.long(), ordered_labels)
    if valid is not None:
        defined = valid.to(device=defined.device, dtype=torch.bool).expand_as(defined)
    counts = topology_violation_counts(rank, defined).sum(0)
    return float(safe_div(counts[0], counts[1]))


@register_family("topology")
class TopologyFamily(MetricFamily):
    """Fraction of (reference-defined) columns whose predicted regions are out of order."""

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        self.ordered = require_anatomy(spec, self.name, "ordered_labels")

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"counts": (2,)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        rank_pred, _, defined = ctx.ranks()
        return {"counts": topology_violation_counts(rank_pred, defined)}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        counts = states["counts"]
        total = counts.sum(0)
        vol, _ = volume_sum(counts, volume)
        return {
            "topology_violation_rate": safe_div(total[0], total[1]),
            "volume/topology_violation_rate": nanmean0(safe_div(vol[:, 0], vol[:, 1])),
        }

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        counts = states["counts"]
        return {"topology_violation_rate": safe_div(counts[:, 0], counts[:, 1])}
