"""ISLAM 2024's signed distance targets and its clamped Gaussian negative log-likelihood.

Islam M.M., de Vente C., Liefers B., Klaver C., Bekkers E.J., Sanchez C.I., "Uncertainty-aware
retinal layer segmentation in OCT through probabilistic signed distance functions", MIDL 2024
(arXiv:2401.05329); official code ``niazoys/RLS_PSDF`` (read to understand, nothing copied).

**Targets** (official ``utils/generate_sdm.py``: the surface polyline drawn as a line mask and
extended to the image borders, SimpleITK's signed Danielsson distance, negated above the surface
per column). Here, per surface ``k`` and column ``j``, the surface row ``z_k(j)`` (an edge
coordinate: the first row below the surface) comes from the label map through
:func:`octseg.metrics.surfaces.extract_surfaces` (fluid and other non-ordered labels count as
the enclosing layer). The surface is the polyline through the points ``(j + 1/2, z_k(j))``,
extended horizontally beyond the first and last column, and a pixel's value is its Euclidean
distance (pixel centres) to that polyline, negative above the surface of its own column
(``row + 1/2 < z_k(j)``), positive below. Columns where the surface is undefined (no ordered
label, e.g. Duke's untraced columns) take a surface linearly interpolated between their defined
neighbours, so the polyline stays continuous; they are masked out of the loss.

The distance is exact up to ``max_distance`` and saturated there: the loss only ever sees
``clamp(sdf, -delta, delta)``, so with ``max_distance >= delta`` it is the same as with the
untruncated map, and only polyline segments within ``max_distance + 1`` columns of a pixel need
to be visited (vectorised over pixels, one pass per column offset).

**Loss** (official ``utils/loss.py``, ``Clamp_GNLL``): per image
``mean over valid pixels of 0.5 * ((clamp(mu) - clamp(sdf))^2 / max(exp(s), 1e-8) + s)`` with
``clamp`` to ``[-delta, delta]`` (delta = 30 px) and ``s`` the predicted log-variance, then the
mean over the images of the batch. Valid pixels: columns where the reference surfaces are
defined, rows and columns inside the scan's true size (batch padding excluded).

Computed on the fly from the batch mask (after augmentation, so always aligned with the image),
on the batch's device, rather than cached per scan: one pass over ``2 * ceil(delta) + 2`` column
offsets of ``[B, S, H, W]`` element-wise operations, a few milliseconds on a GPU, and a cache
keyed by mask content would miss on every augmented batch anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from octseg.losses.terms import check_labels
from octseg.metrics.surfaces import extract_surfaces
from octseg.models.base import SegOutput

__all__ = [
    "ClampedGaussianNLL",
    "clamped_gaussian_nll",
    "fill_undefined_columns",
    "sdf_targets",
    "signed_distance_maps",
]


def fill_undefined_columns(surfaces: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
    """Linearly interpolates surface rows across undefined columns (constant beyond the ends).

    Args:
        surfaces: float surface rows ``[B, S, W]``.
        defined: bool ``[B, W]`` columns holding a surface.

    Returns:
        ``[B, S, W]``; images without any defined column keep their values.
    """
    width = surfaces.shape[-1]
    cols = torch.arange(width, device=surfaces.device).expand_as(defined)
    # Nearest defined column at or left of / at or right of each column (cumulative max/min).
    left = torch.where(defined, cols, -1).cummax(dim=1).values
    right = torch.where(defined, cols, width).flip(1).cummin(dim=1).values.flip(1)
    has_left, has_right = left >= 0, right < width
    left_c = torch.where(has_left, left, right).clamp(0, width - 1)
    right_c = torch.where(has_right, right, left).clamp(0, width - 1)
    z_left = surfaces.gather(2, left_c[:, None].expand_as(surfaces))
    z_right = surfaces.gather(2, right_c[:, None].expand_as(surfaces))
    span = (right_c - left_c).clamp_min(1).to(surfaces.dtype)
    frac = ((cols - left_c).to(surfaces.dtype) / span).clamp(0, 1)[:, None]
    filled = z_left + frac * (z_right - z_left)
    keep = defined[:, None] | ~(has_left | has_right)[:, None]
    return torch.where(keep, surfaces, filled)


def signed_distance_maps(
    surfaces: torch.Tensor, height: int, max_distance: float = 30.0
) -> torch.Tensor:
    """Signed Euclidean distance maps of surfaces given per column (see the module docstring).

    Args:
        surfaces: float surface rows ``[B, S, W]`` in edge coordinates (row ``z`` is the first
            pixel row below the surface; pixel ``i`` has its centre at ``i + 1/2``).
        height: ``H``, the number of pixel rows.
        max_distance: distances are exact up to this value and saturated at it (pixels).

    Returns:
        float32 ``[B, S, H, W]``: negative above the surface, positive below, in pixels,
        magnitudes at most ``max_distance``.
    """
    if max_distance <= 0:
        raise ValueError(f"max_distance must be positive, got {max_distance}.")
    z = surfaces.float()
    batch, num_s, width = z.shape
    reach = math.ceil(max_distance)
    # Replicate padding continues the polyline horizontally beyond the image (the official
    # line mask is extended to the borders).
    margin = (batch, num_s, reach + 1)
    zp = torch.cat([z[..., :1].expand(margin), z, z[..., -1:].expand(margin)], dim=-1)
    centres = torch.arange(height, device=z.device, dtype=torch.float32).view(1, 1, height, 1)
    centres = centres + 0.5
    best = torch.full((batch, num_s, height, width), float(max_distance) ** 2, device=z.device)
    # Segment from column c = j + o to c + 1, for every offset o that can lie within reach.
    for o in range(-reach - 1, reach + 1):
        start = o + reach + 1
        ya = zp[..., start : start + width].unsqueeze(2)  # [B, S, 1, W]
        slope = zp[..., start + 1 : start + 1 + width].unsqueeze(2) - ya
        dx = float(-o)
        dy = centres - ya  # [B, S, H, W]
        t = ((dx + dy * slope) / (1.0 + slope * slope)).clamp_(0.0, 1.0)
        dist2 = (dx - t).square_() + (dy - t * slope).square_()
        torch.minimum(best, dist2, out=best)
    sign = torch.where(centres < z.unsqueeze(2), -1.0, 1.0)
    return best.sqrt_().mul_(sign)


def sdf_targets(
    mask: torch.Tensor,
    ordered_labels: Sequence[int],
    orig_hw: torch.Tensor | None = None,
    max_distance: float = 30.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed distance targets and the valid-pixel mask of a batch of label maps.

    Args:
        mask: labels ``[B, H, W]`` (``ignore_index`` where unannotated or padded).
        ordered_labels: region labels top to bottom (``dataset.anatomy.ordered_labels``).
        orig_hw: each image's true ``(h, w)`` ``[B, 2]`` (batch padding excluded), or None.
        max_distance: saturation of the distances (at least the loss's ``delta``).

    Returns:
        ``(sdf [B, S, H, W] float32, valid [B, 1, H, W] bool)`` with ``S = len(ordered) - 1``.
    """
    batch, height, width = mask.shape
    # ignore_index (like fluid) is not an ordered label: label_ranks fills it from the nearest
    # ordered pixel of its column, and columns without any ordered pixel are undefined.
    z, defined = extract_surfaces(mask, ordered_labels)
    if orig_hw is not None:
        cols = torch.arange(width, device=mask.device)
        defined = defined & (cols[None] < orig_hw[:, 1:2].to(mask.device))
    surfaces = fill_undefined_columns(z.float(), defined)
    sdf = signed_distance_maps(surfaces, height, max_distance)
    valid = defined[:, None, None, :].expand(batch, 1, height, width)
    if orig_hw is not None:
        rows = torch.arange(height, device=mask.device).view(1, 1, height, 1)
        valid = valid & (rows < orig_hw[:, 0].to(mask.device).view(batch, 1, 1, 1))
    return sdf, valid


def clamped_gaussian_nll(
    mean: torch.Tensor,
    log_var: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    delta: float = 30.0,
) -> torch.Tensor:
    """The official clamped Gaussian NLL (see the module docstring), averaged per image over
    its valid pixels, then over the images that have any.

    Args:
        mean: predicted signed distances ``[B, S, H, W]``.
        log_var: predicted log-variances ``[B, S, H, W]``.
        target: signed distance targets ``[B, S, H, W]``.
        valid: bool ``[B, 1 or S, H, W]``.
        delta: clamp of prediction and target (pixels).

    Returns:
        A scalar (zero, still attached to the graph, when no pixel is valid).
    """
    mean, log_var = mean.float(), log_var.float()
    var = log_var.exp().clamp_min(1e-8)
    err = (mean.clamp(-delta, delta) - target.clamp(-delta, delta)).square()
    nll = 0.5 * (err / var + log_var)
    weight = valid.expand_as(nll).to(nll.dtype)
    per_image_count = weight.sum(dim=(1, 2, 3))
    per_image = (nll * weight).sum(dim=(1, 2, 3)) / per_image_count.clamp_min(1.0)
    has = per_image_count > 0
    if not bool(has.any()):
        return (nll * 0.0).sum()
    return per_image[has].mean()


class ClampedGaussianNLL(nn.Module):
    """Loss term: :func:`clamped_gaussian_nll` of ``aux["sdf_mean"]`` / ``aux["sdf_logvar"]``
    against targets from the batch mask (:func:`sdf_targets`).

    Args:
        ordered_labels: region labels top to bottom (``dataset.anatomy.ordered_labels``).
        ignore_index: the unannotated label.
        delta: clamp of prediction and target in pixels (official ``clamp_delta``: 30).
        num_classes: the dataset's class count, for the label check (None: not checked).

    Raises:
        ValueError: if fewer than two ordered labels are given or ``delta`` is not positive.
        KeyError: (in ``forward``) if the network returned no SDF outputs.
    """

    def __init__(
        self,
        ordered_labels: Sequence[int],
        ignore_index: int = 255,
        delta: float = 30.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if ordered_labels is None or len(ordered_labels) < 2:
            raise ValueError(
                f"loss.terms.sdf_nll.ordered_labels={ordered_labels}: ISLAM needs at least two "
                "ordered regions (one surface); set dataset.anatomy.ordered_labels."
            )
        if delta <= 0:
            raise ValueError(f"loss.terms.sdf_nll.delta must be positive, got {delta}.")
        self.ordered_labels = [int(v) for v in ordered_labels]
        self.ignore_index = int(ignore_index)
        self.delta = float(delta)
        self.num_classes = num_classes

    def forward(self, output: SegOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        for key in ("sdf_mean", "sdf_logvar"):
            if key not in output.aux:
                raise KeyError(
                    f"ClampedGaussianNLL needs aux[{key!r}] from the network (model=islam with "
                    f"gaussian_output=true); got aux keys {sorted(output.aux)}."
                )
        mean, log_var = output.aux["sdf_mean"], output.aux["sdf_logvar"]
        expected = len(self.ordered_labels) - 1
        if mean.shape[1] != expected:
            raise ValueError(
                f"The network regresses {mean.shape[1]} surfaces but "
                f"dataset.anatomy.ordered_labels defines {expected}; set model.net.ordered_labels "
                "to the dataset's."
            )
        mask = batch["mask"]
        if self.num_classes is not None:
            check_labels(mask, int(self.num_classes), self.ignore_index)
        sdf, valid = sdf_targets(mask, self.ordered_labels, batch.get("orig_hw"), self.delta)
        return clamped_gaussian_nll(mean, log_var, sdf, valid, self.delta)
