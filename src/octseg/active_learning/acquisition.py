"""Acquisition for region-based active learning: uncertainty maps, superpixels and the greedy
selection of superpixels to a pixel budget (pure numpy/torch; no files, no training).

EdgeAL (Kadir M.A., Alam H.M.T., Sonntag D., "EdgeAL: An Edge Estimation Based Active Learning
Approach for OCT Segmentation", MICCAI 2023, pp. 79-89, arXiv:2307.10745; official code
``Mak-Ta-Reque/EdgeAL``, adapted from ViewAL) scores each pixel of an unlabelled B-scan by the
entropy and the divergence of Monte-Carlo-dropout predictions *across edges*: the official code
feeds the Sobel edge magnitude to ViewAL's multi-view projection in place of a depth map, with
one camera for every B-scan of a volume, so a pixel's "views" are the same pixel in the B-scans
of its volume whose edge magnitude matches. Written from that reading (no code copied):

* **edge prior** :func:`sobel_edges`: the Sobel gradient magnitude scaled by its maximum;
* **view entropy** (log2) of the prediction pooled over a pixel's views, and **view divergence**,
  the mean KL divergence (log2) from the scan's own prediction to each view's
  (:func:`edge_view_maps`);
* both averaged inside **superpixels**; superpixels are ranked by entropy, and among those of the
  same volume overlapping the current one (more than ``overlap`` of either's area) the one with
  the largest divergence is taken (:func:`select_regions`); the rest of that group is skipped in
  this round.

Deviations (also in docs/models.md): the camera geometry is dropped (what it computes with one
shared camera is exactly "same pixel, matching edge magnitude"; the official per-pixel
distance threshold becomes one threshold on the normalised edge difference, and edge-free pixels
are not excluded); SLIC superpixels (scikit-image) replace SEEDS (an external binary); the
superpixel overlap is measured at the same pixel positions (what the shared-camera projection
amounts to); the last superpixel of a round is cut to fill the budget exactly (upstream adds
whole superpixels until the budget is passed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "ACQUISITIONS",
    "edge_view_maps",
    "entropy_map",
    "overlapping_superpixels",
    "select_regions",
    "sobel_edges",
    "superpixel_means",
    "superpixels",
]

#: Acquisition functions: uniform random superpixels, MC-dropout entropy, EdgeAL.
ACQUISITIONS = ("random", "entropy", "edgeal")
_EPS = 1e-8


def sobel_edges(image: np.ndarray) -> np.ndarray:
    """EdgeAL's edge prior: the Sobel gradient magnitude of a grey image, divided by its maximum.

    Args:
        image: ``[H, W]`` intensities (any scale).

    Returns:
        ``[H, W]`` float32 in [0, 1]; all zeros for a constant image.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"sobel_edges expects one grey image [H, W], got shape {img.shape}.")
    magnitude = np.hypot(ndimage.sobel(img, axis=0), ndimage.sobel(img, axis=1))
    peak = magnitude.max()
    return (magnitude / peak if peak > 0 else magnitude).astype(np.float32)


def entropy_map(probs: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy in bits of class probabilities ``[..., K, H, W]`` -> ``[..., H, W]``."""
    return -(probs * torch.log2(probs + _EPS)).sum(dim=-3)


def edge_view_maps(
    probs: torch.Tensor, edges: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """EdgeAL's view entropy and view divergence for the B-scans of one volume.

    The views of pixel ``p`` of scan ``n`` are the scans ``m`` of the volume (``n`` included)
    with ``|edges[m, p] - edges[n, p]| <= threshold``.

    Args:
        probs: MC-averaged class probabilities ``[V, K, H, W]`` of the volume's scans.
        edges: their edge priors ``[V, H, W]`` (:func:`sobel_edges`).
        threshold: the largest edge difference of two views of a pixel.

    Returns:
        ``(entropy, divergence)``, each ``[V, H, W]`` in bits: the entropy of the prediction
        averaged over the views, and the mean ``KL(P_n || P_m)`` over the views.
    """
    if probs.dim() != 4 or edges.shape != (probs.shape[0], *probs.shape[2:]):
        raise ValueError(
            f"edge_view_maps expects probs [V, K, H, W] and edges [V, H, W], got "
            f"{tuple(probs.shape)} and {tuple(edges.shape)}."
        )
    log_p = torch.log2(probs + _EPS)
    entropy = torch.empty_like(edges)
    divergence = torch.empty_like(edges)
    for n in range(probs.shape[0]):
        views = ((edges - edges[n]).abs() <= threshold).to(probs.dtype)  # [V, H, W], views[n]=1
        count = views.sum(dim=0)
        pooled = (probs * views[:, None]).sum(dim=0) / count
        entropy[n] = entropy_map(pooled)
        kl = (probs[n] * (log_p[n] - log_p)).sum(dim=1)  # [V, H, W]
        divergence[n] = (kl * views).sum(dim=0) / count
    return entropy, divergence


def superpixels(image: np.ndarray, region_size: int, compactness: float = 0.1) -> np.ndarray:
    """SLIC superpixels (scikit-image) of a grey image, labels ``0..S-1``.

    Args:
        image: ``[H, W]`` intensities; scaled to [0, 1] by its range first (SLIC's
            ``compactness`` is relative to the intensity scale).
        region_size: the mean superpixel area aimed at, in pixels.
        compactness: SLIC's balance of intensity and space (higher: squarer superpixels).

    Returns:
        ``[H, W]`` int32 labels, consecutive from 0.
    """
    from skimage.segmentation import slic

    img = np.asarray(image, dtype=np.float64)
    low, high = float(img.min()), float(img.max())
    img = (img - low) / (high - low) if high > low else np.zeros_like(img)
    n_segments = max(1, round(img.size / max(1, int(region_size))))
    labels = slic(
        img, n_segments=n_segments, compactness=compactness, channel_axis=None, start_label=0
    )
    _, consecutive = np.unique(labels, return_inverse=True)
    return consecutive.reshape(labels.shape).astype(np.int32)


def superpixel_means(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """The mean of ``values [H, W]`` inside each superpixel of ``segments`` -> ``[S]``."""
    n = int(segments.max()) + 1
    weights = np.asarray(values, np.float64).ravel()
    sums = np.bincount(segments.ravel(), weights=weights, minlength=n)
    counts = np.bincount(segments.ravel(), minlength=n)
    return sums / np.maximum(counts, 1)


def overlapping_superpixels(
    segments: Sequence[np.ndarray], offsets: Sequence[int], overlap: float
) -> dict[int, np.ndarray]:
    """Pairs of superpixels of different scans of one volume that overlap at the same pixels.

    Args:
        segments: the superpixel maps of the volume's scans (same ``[H, W]``).
        offsets: the global id of each scan's superpixel 0.
        overlap: two superpixels overlap when their intersection covers more than this share
            of either's area.

    Returns:
        ``{global id: array of the global ids overlapping it}`` (only ids with overlaps).
    """
    pairs: dict[int, list[np.ndarray]] = {}
    sizes = [np.bincount(s.ravel()) for s in segments]
    for i in range(len(segments)):
        for j in range(i + 1, len(segments)):
            s_i, s_j = segments[i].ravel().astype(np.int64), segments[j].ravel().astype(np.int64)
            n_j = len(sizes[j])
            inter = np.bincount(s_i * n_j + s_j, minlength=len(sizes[i]) * n_j).reshape(-1, n_j)
            share = np.maximum(inter / sizes[i][:, None], inter / sizes[j][None, :])
            a, b = np.nonzero(share > overlap)
            for x, y in zip(a + offsets[i], b + offsets[j], strict=True):
                pairs.setdefault(int(x), []).append(np.array([y]))
                pairs.setdefault(int(y), []).append(np.array([x]))
    return {k: np.concatenate(v) for k, v in pairs.items()}


def select_regions(
    rank: np.ndarray,
    free: np.ndarray,
    budget: int,
    winner: np.ndarray | None = None,
    overlaps: dict[int, np.ndarray] | None = None,
) -> list[tuple[int, int]]:
    """Greedy selection of superpixels until exactly ``budget`` pixels are taken.

    Superpixels are visited by decreasing ``rank`` (stable: ties by id). With ``overlaps``, the
    visited superpixel and the free ones overlapping it form a group; the group member with the
    largest ``winner`` score is taken and the whole group, with everything overlapping the taken
    one, is skipped for the rest of the pass (EdgeAL). If the pass ends short of the budget, a
    second pass takes the remaining superpixels by rank, ignoring overlaps. The last superpixel
    taken may be cut (``taken < free``) so that the total is exactly the budget, or everything
    free when less than the budget is left.

    Args:
        rank: ``[N]`` primary score of every superpixel of the pool (higher first).
        free: ``[N]`` its pixels not yet labelled; superpixels with none are never taken.
        budget: pixels to take.
        winner: ``[N]`` score choosing within an overlap group (required with ``overlaps``).
        overlaps: ``{id: ids overlapping it}``, or None (each superpixel on its own).

    Returns:
        ``[(superpixel id, pixels taken), ...]`` in selection order; the taken pixels sum to
        ``min(budget, free.sum())``.
    """
    if budget < 0:
        raise ValueError(f"The pixel budget must be >= 0, got {budget}.")
    if overlaps is not None and winner is None:
        raise ValueError("select_regions needs winner scores when overlaps are given.")
    free = np.asarray(free, dtype=np.int64)
    order = [int(i) for i in np.argsort(-np.asarray(rank, np.float64), kind="stable")]
    order = [i for i in order if free[i] > 0]
    blocked = np.zeros(len(free), dtype=bool)
    chosen: list[tuple[int, int]] = []
    taken = np.zeros(len(free), dtype=bool)
    remaining = int(budget)

    def take(index: int) -> None:
        nonlocal remaining
        n = int(min(free[index], remaining))
        chosen.append((index, n))
        taken[index] = True
        remaining -= n

    for index in order:
        if remaining <= 0:
            break
        if blocked[index]:
            continue
        if overlaps is None:
            blocked[index] = True
            take(index)
            continue
        group = [index] + [
            int(j) for j in overlaps.get(index, ()) if free[j] > 0 and not blocked[j]
        ]
        best = max(group, key=lambda j: (winner[j], -group.index(j)))
        blocked[group] = True
        blocked[overlaps.get(best, np.empty(0, dtype=np.int64))] = True
        take(best)
    for index in order:  # overlaps blocked too much: fill the budget by rank
        if remaining <= 0:
            break
        if not taken[index]:
            take(index)
    return chosen
