"""OCTSeg metrics: a configurable torchmetrics ``MetricSuite`` of overlap, boundary, thickness,
topology, surface-distance, probabilistic, fluid and choroid metrics (see docs/metrics.md)."""

from __future__ import annotations

from octseg.metrics._base import MetricFamily, family_registry, register_family
from octseg.metrics.overlap import compute_overlap_scores, confusion_counts
from octseg.metrics.suite import FAMILIES, MetricSuite

__all__ = [
    "MetricSuite",
    "FAMILIES",
    "MetricFamily",
    "register_family",
    "family_registry",
    "confusion_counts",
    "compute_overlap_scores",
]
