"""A differentiable layer engine: column-wise surface distributions to positions, anatomical
prior violations and topologically ordered region masks (SD-LayerNet, Fazekas et al., MICCAI
2022; usable by any method that predicts one depth distribution per surface and column).

Conventions: ``S`` surfaces top to bottom, rows ``0..H-1`` top to bottom; a surface's position
in a column is the row of the first pixel below it (as in
:func:`octseg.metrics.surfaces.extract_surfaces`), so a one-hot distribution at row ``z`` gives
position ``z`` and region ``s + 1`` starts at row ``z``.

* Distribution: softmax of the surface logits along H, per column (:func:`column_softmax`).
* Position: soft-argmax ``sum_i i p_i`` (:func:`soft_argmax`); spread: the standard deviation.
* Priors: topology ``relu(z_s - z_{s+1})``, continuity ``|z(x+1) - z(x)|``, curvature
  ``kappa = f'' / (1 + f'^2)^1.5`` with SD-LayerNet's 11-tap operators ``f' = z(x+5) - z(x-5)``
  and ``f'' = z(x-5) - 2 z(x) + z(x+5)`` (replicate padding), compared with per-surface limits.
* Corrections: 1-D, positions made monotone (``z'_s = max(z_s, z'_{s-1})``); 2-D, the
  cumulative masks ``c_s(i) = P(z_s <= i)`` chained by a soft AND
  ``c'_s = relu(c_s + c'_{s-1} - 1)`` so a pixel lies below surface ``s`` only if it lies
  below ``s - 1``, then region ``r = c'_r - c'_{r+1}`` (``c'_{-1} = 1``): ``S + 1`` masks, each
  in ``[0, 1]``, summing to one in every pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "CURVATURE_HALF_WIDTH",
    "column_softmax",
    "column_std",
    "continuity_violations",
    "curvature",
    "estimate_curvature_limits",
    "monotone_positions",
    "region_masks",
    "soft_argmax",
    "topology_violations",
]

#: Half width of SD-LayerNet's curvature operators (11 taps).
CURVATURE_HALF_WIDTH = 5


def column_softmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits [B, S, H, W]`` -> (probabilities, log-probabilities) normalised along H."""
    return logits.softmax(dim=2), logits.log_softmax(dim=2)


def _rows(prob: torch.Tensor) -> torch.Tensor:
    return torch.arange(prob.shape[2], dtype=prob.dtype, device=prob.device).view(1, 1, -1, 1)


def soft_argmax(prob: torch.Tensor) -> torch.Tensor:
    """Expected row of each column distribution: ``prob [B, S, H, W]`` -> ``[B, S, W]``."""
    return (prob * _rows(prob)).sum(dim=2)


def column_std(prob: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Standard deviation (rows) of each column distribution, ``[B, S, W]``."""
    var = (prob * (_rows(prob) - positions.unsqueeze(2)).square()).sum(dim=2)
    # sqrt has an infinite slope at 0 (a one-hot column): keep the gradient finite.
    return var.clamp_min(1e-12).sqrt()


def topology_violations(positions: torch.Tensor) -> torch.Tensor:
    """How far each surface lies below the next one, ``relu(z_s - z_{s+1})``, ``[B, S-1, W]``."""
    return F.relu(positions[:, :-1] - positions[:, 1:])


def continuity_violations(positions: torch.Tensor) -> torch.Tensor:
    """Jumps between neighbouring columns, ``|z(x+1) - z(x)|``, ``[B, S, W-1]``."""
    return (positions[..., 1:] - positions[..., :-1]).abs()


def curvature(positions: torch.Tensor) -> torch.Tensor:
    """Signed curvature of each surface with SD-LayerNet's 11-tap operators (module docstring),
    ``[B, S, W]`` -> ``[B, S, W]`` (replicate padding at the ends; any width)."""
    k = CURVATURE_HALF_WIDTH
    padded = F.pad(positions, (k, k), mode="replicate")
    left, centre, right = padded[..., : -2 * k], positions, padded[..., 2 * k :]
    first = right - left
    second = left - 2 * centre + right
    return second / (1 + first.square()).pow(1.5)


def monotone_positions(positions: torch.Tensor) -> torch.Tensor:
    """1-D topological correction: each surface raised to at most the next depth of the one
    above, ``z'_s = max(z_s, z'_{s-1})`` (a running maximum over surfaces)."""
    return torch.cummax(positions, dim=1).values


def region_masks(prob: torch.Tensor) -> torch.Tensor:
    """Topologically ordered soft region masks from surface distributions.

    Args:
        prob: column distributions ``[B, S, H, W]`` (each sums to one along H).

    Returns:
        ``[B, S+1, H, W]``: region 0 above the first surface ... region ``S`` below the last;
        non-negative, summing to one in every pixel (module docstring).
    """
    cumulative = prob.cumsum(dim=2)
    below = [torch.ones_like(cumulative[:, 0]), cumulative[:, 0]]
    for s in range(1, prob.shape[1]):
        below.append(F.relu(cumulative[:, s] + below[-1] - 1))
    regions = [below[r] - below[r + 1] for r in range(prob.shape[1])] + [below[-1]]
    return torch.stack(regions, dim=1)


def estimate_curvature_limits(
    surfaces: list[torch.Tensor], valid: list[torch.Tensor], quantile: float = 1.0
) -> torch.Tensor:
    """Per-surface curvature limits from reference surfaces: the ``quantile`` of ``|kappa|``
    over every column whose whole 11-column window is annotated.

    Args:
        surfaces: per B-scan, surface rows ``[S, W]`` (any widths).
        valid: per B-scan, bool ``[W]``: columns where the reference is defined.
        quantile: 1.0 gives the maximum (SD-LayerNet's table is a maximum over training labels).

    Returns:
        float32 ``[S]`` limits (``inf`` for a surface never measured).

    Raises:
        ValueError: if ``quantile`` is not in ``(0, 1]``, no scan is given, or the scans
            disagree on ``S``.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"curvature quantile must be in (0, 1], got {quantile}.")
    if not surfaces:
        raise ValueError("estimate_curvature_limits needs at least one labelled B-scan.")
    counts = {int(s.shape[0]) for s in surfaces}
    if len(counts) != 1:
        raise ValueError(f"B-scans disagree on the number of surfaces: {sorted(counts)}.")
    k = CURVATURE_HALF_WIDTH
    values: list[torch.Tensor] = []
    for rows, ok in zip(surfaces, valid, strict=True):
        kappa = curvature(rows.double()[None])[0].abs()  # [S, W]
        # A column counts when every column its operators read is annotated (replicate padding
        # reads the edge column, which must then be annotated too).
        bad = F.pad((~ok).double()[None, None], (k, k), mode="replicate")
        window_bad = F.max_pool1d(bad, 2 * k + 1, stride=1)[0, 0] > 0
        values.append(kappa[:, ~window_bad])
    kappa = torch.cat(values, dim=1)
    if kappa.shape[1] == 0:
        return torch.full((kappa.shape[0],), float("inf"))
    return torch.quantile(kappa, quantile, dim=1).float()
