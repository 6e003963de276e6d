"""OCT layer surfaces and boundary errors, vectorised in torch.

Anatomy: ``ordered_labels`` lists the region labels top to bottom (vitreous, layers..., choroid);
surface ``k`` (``k = 0 .. R-2`` for ``R`` regions) separates ``ordered_labels[k]`` from
``ordered_labels[k + 1]``. In every column (A-scan) ``j`` the surface row is the number of pixels
ranked above it::

    z_k(j) = #{ i : rank(i, j) <= k }        (rank = position of the label in ordered_labels)

which equals the first row of region ``k + 1`` in a clean column and stays robust to stray
islands (they shift the count by their size, not by their distance).

Pixels whose label is not an ordered region (fluid, ignore_index, any other label) take the rank
of the nearest ordered pixel in the same column (ties go to the pixel above), so fluid enclosed
in a layer counts as that layer, and a pocket straddling a surface splits at its middle. A ground
truth column with no ordered pixel at all (e.g. all ``ignore_index`` padding) is undefined and
excluded from every error.

The surfaces of a batch are extracted once (:meth:`BatchContext.surfaces`) and shared by the
boundary, thickness (``thickness.py``) and topology (``topology.py``) families.

Family ``boundary``: with ``e = (z_pred - z_true) * axial_um`` (each image's own axial spacing)
the errors are pooled over all A-scans (columns) where the reference is defined, over the
dataset or over each volume (``volume/`` keys: mean over volumes of the pooled volume values);
``max_um`` is the mean over scans of each scan's maximum.
"""

from __future__ import annotations

import functools
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

__all__ = [
    "label_ranks",
    "surfaces_from_ranks",
    "extract_surfaces",
    "surface_error_stats",
    "BoundaryFamily",
]


@functools.lru_cache(maxsize=32)
def _rank_lut(ordered: tuple[int, ...], size: int, device: torch.device) -> torch.Tensor:
    """int32 lookup table label -> rank (-1 for labels that are not ordered regions)."""
    lut = torch.full((size,), -1, dtype=torch.int32, device=device)
    lut[list(ordered)] = torch.arange(len(ordered), dtype=torch.int32, device=device)
    return lut


def label_ranks(
    labels: torch.Tensor, ordered_labels: Sequence[int], max_label: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of the ordered regions, with other labels filled from the nearest ordered pixel.

    Args:
        labels: integer label maps ``[B, H, W]`` (non-negative).
        ordered_labels: region labels top to bottom.
        max_label: an upper bound of the labels when the caller knows it (skips a pass).

    Returns:
        ``(rank, column_defined)``: int32 ``[B, H, W]`` ranks in ``[0, R)`` and bool ``[B, W]``
        telling which columns hold at least one ordered pixel (other columns get rank 0).
    """
    device = labels.device
    if max_label is None:
        lo, hi = (int(v) for v in torch.aminmax(labels)) if labels.numel() else (0, 0)
        if lo < 0:
            raise ValueError(f"labels must be non-negative, got {lo}.")
    else:
        hi = int(max_label)
    lut = _rank_lut(
        tuple(int(v) for v in ordered_labels), max(hi + 1, max(ordered_labels) + 1), device
    )
    # index_select on the flat map is several times faster than fancy indexing on CPU, and
    # min/max reductions over rows are ~8x faster than any/all on bool maps.
    rank = lut.index_select(0, labels.reshape(-1).long()).view(labels.shape)
    column_defined = rank.amax(dim=1) >= 0
    needs_fill = rank.amin(dim=1) < 0  # [B, W] columns holding unknown pixels
    if not bool(needs_fill.any()):
        return rank, column_defined
    # Fill only the columns that hold unknown pixels (fluid is usually in a few columns);
    # ``rank`` is our own fresh tensor, so the filled columns are written back in place.
    b_idx, w_idx = needs_fill.nonzero(as_tuple=True)
    cols = rank[b_idx, :, w_idx]  # [n, H]
    col_known = cols >= 0
    height = labels.shape[1]
    # int32 positions: cummax/cummin on int32 is ~5x faster than on int64 on CPU.
    rows = torch.arange(height, dtype=torch.int32, device=device).view(1, height).expand_as(cols)
    # Last known row at or above each pixel, and first known row at or below it (cumulative
    # max/min along the column): the vectorised "nearest ordered pixel" search.
    above = torch.where(col_known, rows, -1).cummax(dim=1).values
    below = torch.where(col_known, rows, height).flip(1).cummin(dim=1).values.flip(1)
    has_above, has_below = above >= 0, below < height
    rank_above = cols.gather(1, above.clamp_min(0).long())
    rank_below = cols.gather(1, below.clamp_max(height - 1).long())
    use_above = has_above & (~has_below | ((rows - above) <= (below - rows)))
    filled = torch.where(use_above, rank_above, torch.where(has_below, rank_below, 0))
    rank[b_idx, :, w_idx] = filled
    return rank, column_defined


def surfaces_from_ranks(rank: torch.Tensor, num_regions: int) -> torch.Tensor:
    """Surface rows ``[B, R-1, W]`` (int64) from filled ranks ``[B, H, W]``.

    ``z_k(j)`` counts the pixels of column ``j`` ranked ``<= k``: one bincount over
    ``(column, rank)`` pairs and a cumulative sum over ranks.
    """
    batch, _, width = rank.shape
    # int32 throughout: mixing int32 ranks with int64 offsets takes a slow promotion path.
    offset = torch.arange(batch * width, dtype=torch.int32, device=rank.device) * num_regions
    idx = rank.to(torch.int32) + offset.view(batch, 1, width)
    counts = torch.bincount(idx.reshape(-1), minlength=batch * width * num_regions)
    counts = counts.view(batch, width, num_regions).cumsum(dim=-1)  # pixels with rank <= k
    return counts[..., : num_regions - 1].transpose(1, 2).contiguous()


def extract_surfaces(
    labels: torch.Tensor, ordered_labels: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Surface rows per column from a label map.

    Args:
        labels: integer label maps ``[B, H, W]``.
        ordered_labels: region labels top to bottom (``R`` of them).

    Returns:
        ``(z, column_defined)``: int64 ``[B, R-1, W]`` surface rows in pixels (the row index of
        the first pixel below the surface) and bool ``[B, W]`` (see :func:`label_ranks`).
    """
    rank, column_defined = label_ranks(labels, ordered_labels)
    return surfaces_from_ranks(rank, len(ordered_labels)), column_defined


def surface_error_stats(
    z_pred: torch.Tensor,
    z_true: torch.Tensor,
    valid: torch.Tensor,
    axial_um: float | torch.Tensor,
) -> torch.Tensor:
    """Sufficient statistics of the signed surface error ``(z_pred - z_true) * axial_um``.

    Args:
        z_pred: predicted surface rows ``[B, S, W]``.
        z_true: reference surface rows ``[B, S, W]``.
        valid: bool ``[B, W]`` columns where the reference is defined.
        axial_um: axial pixel spacing in micrometres, one for all images or one per image
            (tensor ``[B]``).

    Returns:
        float64 ``[B, S, 5]``: (sum |e|, sum e, sum e^2, max |e| (NaN without valid columns),
        number of valid columns).
    """
    err = (z_pred - z_true).double() * per_image(axial_um, 3)
    mask = valid.unsqueeze(1).expand_as(err)
    e = torch.where(mask, err, torch.zeros_like(err))
    count = mask.sum(dim=-1).double()
    max_abs = torch.where(mask, e.abs(), torch.full_like(e, -1.0)).amax(dim=-1)
    max_abs = torch.where(count > 0, max_abs, torch.full_like(max_abs, float("nan")))
    return torch.stack([e.abs().sum(-1), e.sum(-1), (e * e).sum(-1), max_abs, count], dim=-1)


@register_family("boundary")
class BoundaryFamily(MetricFamily):
    """Per-surface boundary errors in micrometres: MAD, signed bias, RMSE and max."""

    def __init__(self, spec: SuiteSpec) -> None:
        super().__init__(spec)
        ordered = require_anatomy(spec, self.name, "ordered_labels")
        names = spec.anatomy.get("surface_names") or [
            f"surface_{k}" for k in range(len(ordered) - 1)
        ]
        if len(names) != len(ordered) - 1:
            raise ValueError(
                f"anatomy.surface_names has {len(names)} names but anatomy.ordered_labels "
                f"({len(ordered)} regions) defines {len(ordered) - 1} surfaces; fix the dataset "
                "config."
            )
        self.surface_names = [str(n) for n in names]

    def row_states(self) -> dict[str, tuple[int, ...]]:
        return {"stats": (len(self.surface_names), 5)}

    def update(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        z_pred, z_true, defined = ctx.surfaces()
        return {"stats": surface_error_stats(z_pred, z_true, defined, ctx.spacing_um[:, 0])}

    @staticmethod
    def _pooled(stats: torch.Tensor) -> dict[str, torch.Tensor]:
        n = stats[..., 4]
        return {
            "mad_um": safe_div(stats[..., 0], n),
            "bias_um": safe_div(stats[..., 1], n),
            "rmse_um": safe_div(stats[..., 2], n).sqrt(),
        }

    def compute(self, states: dict[str, torch.Tensor], volume: torch.Tensor) -> dict[str, Any]:
        stats = states["stats"]
        out: dict[str, Any] = {}
        for key, value in self._pooled(stats.sum(0)).items():
            out.update(named(key, value, self.surface_names))
        out.update(named("max_um", nanmean0(stats[..., 3]), self.surface_names))
        vol_stats, _ = volume_sum(stats, volume)
        for key, value in self._pooled(vol_stats).items():
            out.update(named("volume/" + key, nanmean0(value), self.surface_names))
        return out

    def per_scan(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stats = states["stats"]
        values = self._pooled(stats)
        values["max_um"] = stats[..., 3]
        return values
