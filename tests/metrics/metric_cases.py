"""Tiny synthetic OCT label maps shared by the metric tests."""

from __future__ import annotations

import torch

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
