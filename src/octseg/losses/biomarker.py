"""Choroid thickness per A-scan and the biomarker regulariser of BioNet.

Zhang et al., "Automatic Segmentation and Visualization of Choroid in OCT with Knowledge Infused
Deep Learning", IEEE JBHI 24(12):3408-3420, 2020 (doi:10.1109/JBHI.2020.3023144): a biomarker
network, trained first on ground-truth masks, predicts the choroid thickness; frozen, it
regularises the choroid segmenter: ``|bio(softmax(LCS)) - thickness(GT)|_1``.

The thickness of a column (A-scan) is the number of its pixels whose label is a choroid label
(:func:`column_thickness`), in pixels or micrometres (times the scan's axial spacing). A column
counts only where it is fully annotated: one ``ignore_index`` pixel inside the scan's true size
(Duke's untraced columns, augmentation fill) makes its thickness unknown; columns and rows added
by batch padding (outside ``orig_hw``) are not part of the scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from octseg.losses.auxiliary import remap_labels
from octseg.models.base import SegOutput

__all__ = ["BiomarkerLoss", "column_thickness", "masked_l1", "scan_extent"]

UNITS = ("px", "um")


def scan_extent(
    shape: tuple[int, int, int], orig_hw: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Boolean ``[B, H, W]``: True inside each scan's true size (all True without ``orig_hw``)."""
    b, h, w = shape
    if orig_hw is None:
        return torch.ones((b, h, w), dtype=torch.bool, device=device)
    hw = orig_hw.to(device)
    rows = torch.arange(h, device=device)[None, :, None] < hw[:, 0, None, None]
    cols = torch.arange(w, device=device)[None, None, :] < hw[:, 1, None, None]
    return rows & cols


def column_thickness(
    mask: torch.Tensor,
    choroid_lookup: torch.Tensor,
    ignore_index: int = 255,
    orig_hw: torch.Tensor | None = None,
    unit: str = "px",
    spacing_um: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choroid thickness of every column of a label map.

    Args:
        mask: labels ``[B, H, W]`` (``ignore_index`` where unannotated or padded).
        choroid_lookup: ``[K]`` long, 1 for the labels that make up the choroid, 0 otherwise.
        ignore_index: the unannotated label.
        orig_hw: each scan's true ``(h, w)`` ``[B, 2]`` inside the padded batch (optional).
        unit: ``"px"`` or ``"um"`` (pixels times the axial spacing).
        spacing_um: ``[B, 2|3]`` per-scan spacing (axial first); required for ``"um"``.

    Returns:
        ``(thickness [B, W] float32, valid [B, W] bool)``; thickness is 0 where not valid.

    Raises:
        ValueError: for an unknown unit, ``"um"`` without spacing, or labels outside the lookup.
    """
    if unit not in UNITS:
        raise ValueError(f"Thickness unit must be one of {UNITS}, got {unit!r}.")
    choroid = remap_labels(mask, choroid_lookup, ignore_index)
    inside = scan_extent(tuple(mask.shape), orig_hw, mask.device)
    unknown = (mask == ignore_index) & inside
    valid = ~unknown.any(dim=1) & inside.any(dim=1)
    thickness = ((choroid == 1) & inside).sum(dim=1).to(torch.float32)
    if unit == "um":
        if spacing_um is None:
            raise ValueError(
                "Choroid thickness in micrometres needs the batch's 'spacing_um'; the dataset "
                "gives none: use thickness unit 'px' (loss.terms.biomarker.unit=px)."
            )
        thickness = thickness * spacing_um[:, :1].to(thickness)
    return thickness * valid, valid


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean ``|pred - target|`` over the valid columns (0 when none is valid)."""
    diff = (pred.float() - target).abs() * valid
    return diff.sum() / valid.sum().clamp_min(1)


class BiomarkerLoss(nn.Module):
    """BioNet's regulariser: L1 between the frozen biomarker network's thickness prediction on
    the segmentation (``output.aux["thickness_pred"] [B, W]``, added by
    :class:`~octseg.modules.two_stage.BioNetModule`) and the ground-truth thickness.

    Args:
        key: the ``aux`` entry with the predicted thickness.
        lookup_key: the ``aux`` entry with the label -> choroid lookup (the network's
            ``choroid_labels``).
        ignore_index: the unannotated label.
        unit: ``"px"`` or ``"um"``; the biomarker network predicts in this unit.
    """

    def __init__(
        self,
        key: str = "thickness_pred",
        lookup_key: str = "lcs_target_map",
        ignore_index: int = 255,
        unit: str = "px",
    ) -> None:
        super().__init__()
        if unit not in UNITS:
            raise ValueError(
                f"BiomarkerLoss unit must be one of {UNITS}, got {unit!r} "
                "(loss.terms.biomarker.unit)."
            )
        self.key = key
        self.lookup_key = lookup_key
        self.ignore_index = ignore_index
        self.unit = unit

    def target(
        self, batch: Mapping[str, Any], lookup: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth thickness and valid columns of ``batch["mask"]``."""
        return column_thickness(
            batch["mask"],
            lookup,
            self.ignore_index,
            batch.get("orig_hw"),
            self.unit,
            batch.get("spacing_um"),
        )

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        missing = [k for k in (self.key, self.lookup_key) if k not in output.aux]
        if missing:
            raise KeyError(
                f"BiomarkerLoss reads output.aux{missing}, which only BioNet's module provides "
                f"(got {sorted(output.aux)}); use loss=bionet with model=bionet."
            )
        thickness, valid = self.target(batch, output.aux[self.lookup_key])
        return masked_l1(output.aux[self.key], thickness, valid)
