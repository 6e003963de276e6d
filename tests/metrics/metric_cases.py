"""Tiny synthetic OCT label maps shared by the metric tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from octseg.metrics.suite import MetricSuite

NUM_CLASSES = 10
CLASS_NAMES = [
    "vitreous",
    "RNFL",
    "GCIPL",
    "INL",
    "OPL",
    "ONL",
    "ISE",
    "OSRPE",
    "choroid",
    "fluid",
]
ANATOMY = {
    "ordered_labels": list(range(9)),
    "surface_names": [
        "ILM",
        "RNFL-GCL",
        "IPL-INL",
        "INL-OPL",
        "OPL-ONL",
        "ISM-ISE",
        "ISE-OS",
        "BM",
    ],
    "layer_labels": list(range(1, 8)),
    "fluid_labels": [9],
}
#: Default boundary rows of the eight surfaces in :func:`layered_map`.
BOUNDS = (10, 14, 19, 23, 27, 36, 40, 45)


def layered_map(height: int = 60, width: int = 32, bounds=BOUNDS, shift: int = 0) -> torch.Tensor:
    """A clean layered label map ``[H, W]``: region r occupies rows bounds[r-1]..bounds[r]."""
    rows = torch.arange(height).view(height, 1).expand(height, width)
    b = torch.as_tensor(bounds) + shift
    return (rows.unsqueeze(-1) >= b).sum(-1).long()


def make_suite(families: Sequence[str], **kwargs: Any) -> MetricSuite:
    """A suite over the test label maps: 10 named classes, Duke's spacing, the test anatomy;
    any argument of :class:`MetricSuite` overrides these."""
    defaults: dict[str, Any] = {
        "num_classes": NUM_CLASSES,
        "class_names": CLASS_NAMES,
        "spacing_um": [3.87, 11.3],
        "anatomy": ANATOMY,
    }
    return MetricSuite(families=list(families), **{**defaults, **kwargs})
