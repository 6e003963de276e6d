"""Acquisition pieces on hand-made inputs: the Sobel prior on a step edge, entropy and EdgeAL's
view maps on hand-set probabilities, superpixel means and overlaps, and the greedy selection's
budget accounting (exactly the budget, never a pixel twice)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from octseg.active_learning.acquisition import (
    edge_view_maps,
    entropy_map,
    overlapping_superpixels,
    select_regions,
    sobel_edges,
    superpixel_means,
    superpixels,
)


def test_sobel_prior_of_a_vertical_step_lies_on_the_two_columns_beside_it() -> None:
    image = np.zeros((6, 8))
    image[:, 4:] = 3.0
    edges = sobel_edges(image)
    assert edges.dtype == np.float32 and edges.max() == pytest.approx(1.0)
    np.testing.assert_allclose(edges[:, 3], 1.0)
    np.testing.assert_allclose(edges[:, 4], 1.0)
    assert np.all(edges[:, [0, 1, 2, 5, 6, 7]] == 0)
    # Scale and offset free; a flat image has no edge.
    np.testing.assert_allclose(sobel_edges(10 * image + 7), edges, atol=1e-6)
    assert not sobel_edges(np.full((5, 5), 2.0)).any()
    with pytest.raises(ValueError, match="one grey image"):
        sobel_edges(np.zeros((2, 3, 3)))


def test_entropy_in_bits_of_hand_made_probabilities() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25] * 4, [0.5, 0.5, 0.0, 0.0]])
    probs = probs.T.reshape(4, 1, 3)  # [K, H, W]
    np.testing.assert_allclose(entropy_map(probs)[0].numpy(), [0.0, 2.0, 1.0], atol=1e-5)


def test_edge_view_maps_pool_matching_edges_and_average_the_divergence() -> None:
    # Two scans of a volume, two pixels: at pixel 0 the edges match (views: both scans), at
    # pixel 1 they differ (each scan is its own only view).
    p0 = torch.tensor([[0.8, 0.3], [0.2, 0.7]])  # [K=2, W=2] of scan 0
    p1 = torch.tensor([[0.2, 0.6], [0.8, 0.4]])
    probs = torch.stack([p0, p1])[:, :, None, :]  # [V, K, H=1, W]
    edges = torch.tensor([[[0.5, 0.0]], [[0.55, 0.9]]])
    entropy, divergence = edge_view_maps(probs, edges, threshold=0.1)
    kl = 0.8 * math.log2(0.8 / 0.2) + 0.2 * math.log2(0.2 / 0.8)  # KL(p0 || p1) at pixel 0
    np.testing.assert_allclose(entropy[:, 0, 0].numpy(), [1.0, 1.0], atol=1e-5)  # pooled 0.5/0.5
    np.testing.assert_allclose(divergence[:, 0, 0].numpy(), [kl / 2, kl / 2], atol=1e-5)
    own = entropy_map(probs[:, :, :, 1:])[:, 0, 0]
    np.testing.assert_allclose(entropy[:, 0, 1].numpy(), own.numpy(), atol=1e-6)
    np.testing.assert_allclose(divergence[:, 0, 1].numpy(), [0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="edges"):
        edge_view_maps(probs, edges[:, :, :1], threshold=0.1)


def test_superpixel_means_and_slic_respects_a_step() -> None:
    segments = np.array([[0, 0, 1], [2, 2, 1]])
    values = np.array([[1.0, 3.0, 4.0], [0.0, 1.0, 6.0]])
    np.testing.assert_allclose(superpixel_means(values, segments), [2.0, 5.0, 0.5])
    image = np.zeros((32, 32))
    image[:, 16:] = 1.0
    labels = superpixels(image, region_size=128, compactness=0.1)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert set(np.unique(labels)) == set(range(labels.max() + 1))  # consecutive from 0
    for s in np.unique(labels):  # no superpixel straddles the step
        assert len(np.unique(image[labels == s])) == 1


def test_overlapping_superpixels_at_the_same_pixels() -> None:
    a = np.array([[0, 0, 1, 1]])
    b = np.array([[0, 1, 1, 1]])  # global ids 2, 3
    pairs = overlapping_superpixels([a, b], [0, 2], overlap=0.6)
    # a0 ∩ b0 = 1 px (all of b0), a0 ∩ b1 = 1 px (1/2 of a0, 1/3 of b1), a1 ∩ b1 = 2 px (all a1).
    assert {k: sorted(v.tolist()) for k, v in pairs.items()} == {0: [2], 2: [0], 1: [3], 3: [1]}
    pairs = overlapping_superpixels([a, b], [0, 2], overlap=0.25)
    assert sorted(pairs[0].tolist()) == [2, 3]


def test_selection_takes_the_exact_budget_and_cuts_the_last_superpixel() -> None:
    rank = np.array([0.1, 0.9, 0.5, 0.7])
    free = np.array([30, 10, 20, 0])  # superpixel 3 is fully labelled already
    assert select_regions(rank, free, budget=25) == [(1, 10), (2, 15)]
    assert select_regions(rank, free, budget=100) == [(1, 10), (2, 20), (0, 30)]
    assert select_regions(rank, free, budget=0) == []
    with pytest.raises(ValueError, match=">= 0"):
        select_regions(rank, free, budget=-1)


def test_edgeal_selection_takes_the_most_divergent_of_an_overlap_group() -> None:
    rank = np.array([3.0, 2.0, 1.0, 0.0])
    free = np.array([10, 10, 10, 10])
    winner = np.array([0.0, 5.0, 0.0, 0.0])
    overlaps = {0: np.array([1]), 1: np.array([0])}
    assert select_regions(rank, free, 15, winner, overlaps) == [(1, 10), (2, 5)]
    # A pass blocked by overlaps is completed by rank, so the budget is still met exactly.
    assert select_regions(rank[:2], free[:2], 15, winner[:2], overlaps) == [(1, 10), (0, 5)]
    with pytest.raises(ValueError, match="winner"):
        select_regions(rank, free, 5, None, overlaps)


@pytest.mark.parametrize("with_overlaps", [False, True])
def test_selection_budget_accounting_on_random_pools(with_overlaps: bool) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        free = rng.integers(0, 50, n)
        budget = int(rng.integers(0, 2 * free.sum() + 2))
        overlaps = None
        if with_overlaps:
            overlaps = {}
            for a, b in rng.integers(0, n, (n, 2)):
                if a != b:
                    overlaps.setdefault(int(a), []).append(int(b))
                    overlaps.setdefault(int(b), []).append(int(a))
            overlaps = {k: np.array(v) for k, v in overlaps.items()}
        chosen = select_regions(rng.random(n), free, budget, rng.random(n), overlaps)
        ids = [i for i, _ in chosen]
        assert len(ids) == len(set(ids))  # never the same superpixel twice
        assert all(0 < k <= free[i] for i, k in chosen)
        assert sum(k for _, k in chosen) == min(budget, int(free.sum()))
