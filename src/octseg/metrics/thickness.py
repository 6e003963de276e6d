"""Layer thickness from the OCT surfaces (see ``surfaces.py``), in micrometres.

``t_l(j) = (z_bottom(j) - z_top(j)) * axial_um`` for layer ``l`` from its bounding surfaces (the
image top/bottom edges close the first/last region), with each image's own axial spacing.

Family ``thickness``: ``thickness_mae_um`` / ``thickness_bias_um`` pool the absolute / signed
errors over all A-scans where the reference is defined; ``volume/thickness_mae_um`` pools them
per volume, then averages over volumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from octseg.metrics._base import (
    BatchContext,
    MetricFamily,
    SuiteSpec,
    named,
    nanmean0,
    per_image,
    register_family,
    require_anatomy,
    safe_div,
    volume_sum,
)
from octseg.metrics.surfaces import extract_surfaces

__all__ = ["layer_thickness", "thickness_error_stats", "thickness_profiles", "ThicknessFamily"]


def layer_thickness(
    z: torch.Tensor, height: int, layer_positions: Sequence[int], axial_um: float | torch.Tensor
) -> torch.Tensor:
    """Layer thickness profiles in micrometres.

    Args:
        z: surface rows ``[B, R-1, W]`` from :func:`extract_surfaces`.
        height: image height (the bottom edge closes the last region).
        layer_positions: positions of the layers in ``ordered_labels``.
        axial_um: axial pixel spacing in micrometres, one for all images or one per image
            (tensor ``[B]``).

    Returns:
        float64 ``[B, L, W]``: ``(z_{pos} - z_{pos-1}) * axial_um``, the top edge and bottom
        edge standing in for the surfaces above the first and below the last region.
    """
    batch, _, width = z.shape
    top = torch.zeros(batch, 1, width, dtype=z.dtype, device=z.device)
    bottom = torch.full((batch, 1, width), height, dtype=z.dtype, device=z.device)
    edges = torch.cat([top, z, bottom], dim=1)  # region r spans edges[r] .. edges[r + 1]
    pos = torch.as_tensor(list(layer_positions), dtype=torch.long, device=z.device)
    return (edges[:, pos + 1] - edges[:, pos]).double() * per_image(axial_um, 3)


def thickness_error_stats(
    t_pred: torch.Tensor, t_true: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Sufficient statistics of the thickness error per layer.

    Args:
        t_pred: predicted thickness ``[B, L, W]`` (micrometres).
        t_true: reference thickness ``[B, L, W]``.
        valid: bool ``[B, W]`` columns where the reference is defined.

    Returns:
        float64 ``[B, L, 3]``: (sum |t_pred - t_true|, sum (t_pred - t_true), valid columns).
    """
    mask = valid.unsqueeze(1).expand_as(t_pred)
    diff = torch.where(mask, t_pred - t_true, torch.zeros_like(t_pred))
    return torch.stack([diff.abs().sum(-1), diff.sum(-1), mask.sum(-1).double()], dim=-1)


def thickness_profiles(
    labels: torch.Tensor,
    ordered_labels: Sequence[int],
    layer_labels: Sequence[int],
    axial_um: float | torch.Tensor,
) -> torch.Tensor:
    """Layer thickness per column in micrometres, NaN where the column is undefined (for plots).

    Args:
        labels: label maps ``[B, H, W]`` (or one ``[H, W]``).
        ordered_labels: region labels top to bottom.
        layer_labels: the layers to profile (each one of ``ordered_labels``).
        axial_um: axial pixel spacing in micrometres (or a tensor ``[B]``, one per map).

    Returns:
        float64 ``[B, L, W]`` (``[L, W]`` for a single map).

    Raises:
        ValueError: if a layer label is not an ordered region.
    """
    single = labels.ndim == 2
    labels = labels[None] if single else labels
    ordered = list(ordered_labels)
    missing = [lab for lab in layer_labels if lab not in ordered]
    if missing:
        raise ValueError(f"layer labels {missing} are not in ordered_labels {ordered}.")
    z, defined = extract_surfaces(labels, ordered)
    positions = [ordered.index(lab) for lab in layer_labels]
    thick = layer_thickness(z, labels.shape[-2], positions, axial_um)
    thick = thick.masked_fill(~defined.unsqueeze(1), float("nan"))
    return thick[0] if single else thick


@register_family("thickness")
class ThicknessFamily(MetricFamily):
    """Mean absolute (and signed) layer thickness error in micrometres per layer."""

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        ordered = require_anatomy(spec, self.name, "ordered_labels")
        layers = require_anatomy(spec, self.name, "layer_labels")
        missing = [lab for lab in layers if lab not in ordered]
        if missing:
            raise ValueError(
                f"anatomy.layer_labels {missing} are not in anatomy.ordered_labels {ordered}; "
                "every layer must be one of the ordered regions."
            )
        self.positions = [ordered.index(lab) for lab in layers]
        self.layer_names = [spec.class_names[lab] for lab in layers]

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"stats": (len(self.positions), 3)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        z_pred, z_true, defined = ctx.surfaces()
        height, axial = ctx.target.shape[-2], ctx.spacing_um[:, 0]
        t_pred = layer_thickness(z_pred, height, self.positions, axial)
        t_true = layer_thickness(z_true, height, self.positions, axial)
        return {"stats": thickness_error_stats(t_pred, t_true, defined)}

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        stats = states["stats"]
        total = stats.sum(0)
        out: dict[str, Any] = {}
        out.update(named("thickness_mae_um", safe_div(total[:, 0], total[:, 2]), self.layer_names))
        out.update(
            named("thickness_bias_um", safe_div(total[:, 1], total[:, 2]), self.layer_names)
        )
        vol, _ = volume_sum(stats, volume)
        out.update(
            named(
                "volume/thickness_mae_um",
                nanmean0(safe_div(vol[..., 0], vol[..., 2])),
                self.layer_names,
            )
        )
        return out

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stats = states["stats"]
        return {
            "mean_abs_err_um": safe_div(stats[..., 0], stats[..., 2]),
            "bias_um": safe_div(stats[..., 1], stats[..., 2]),
        }
