"""ReLayNet's weighted logistic loss and Dice on hand-built masks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from octseg.losses.relaynet import (
    ReLayNetDice,
    ReLayNetWeightedCE,
    boundary_mask,
    relaynet_weight_map,
)
from octseg.models.base import SegOutput

IGN = 255


def _mask() -> torch.Tensor:
    # Rows: vitreous (0), layer 1, layer 1, fluid (9), below RPE (8); last column unannotated.
    rows = [[0, 0, 0, IGN], [1, 1, 1, IGN], [1, 1, 1, IGN], [1, 9, 1, IGN], [8, 8, 8, IGN]]
    return torch.tensor([rows])


def test_boundary_marks_both_sides_of_each_transition() -> None:
    expected = torch.tensor(
        [[[1, 1, 1, 0], [1, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]], dtype=torch.bool
    )
    assert torch.equal(boundary_mask(_mask(), IGN), expected)


def test_weight_map_values() -> None:
    w = relaynet_weight_map(_mask(), weighted_labels=[1, 9], boundary_weight=10, class_weight=5)
    expected = torch.tensor(
        [[[11, 11, 11, 0], [16, 16, 16, 0], [6, 16, 6, 0], [16, 16, 16, 0], [11, 11, 11, 0]]],
        dtype=torch.float32,
    )
    assert torch.equal(w, expected)


def test_weighted_ce_equals_hand_computation() -> None:
    mask = _mask()
    torch.manual_seed(0)
    logits = torch.randn(1, 10, 5, 4)
    term = ReLayNetWeightedCE(layer_labels=[1], fluid_labels=[9], ignore_index=IGN)
    got = term(SegOutput(logits), {"mask": mask})
    w = relaynet_weight_map(mask, [1, 9])
    logp = F.log_softmax(logits, dim=1)
    total = 0.0
    for i in range(5):
        for j in range(3):  # the 4th column is ignored
            total -= float(w[0, i, j]) * float(logp[0, mask[0, i, j], i, j])
    assert math.isclose(float(got), total / 15, rel_tol=1e-5)


def test_dice_perfect_prediction_is_near_zero_and_ignores_unlabelled() -> None:
    mask = _mask()
    safe = mask.clamp(max=9)
    logits = 50.0 * F.one_hot(safe, 10).permute(0, 3, 1, 2).float()
    logits[..., 3] = torch.randn(10, 5)  # garbage on the ignored column
    term = ReLayNetDice(ignore_index=IGN, include_background=True)
    loss = float(term(SegOutput(logits), {"mask": mask}))
    # Present classes (0, 1, 8, 9) score ~0; absent ones score 0 thanks to the smoothing terms.
    assert loss < 1e-3


def test_loss_decreases_with_better_logits() -> None:
    mask = _mask()
    term = ReLayNetWeightedCE(layer_labels=[1], fluid_labels=[9], ignore_index=IGN)
    good = 5.0 * F.one_hot(mask.clamp(max=9), 10).permute(0, 3, 1, 2).float()
    bad = torch.zeros_like(good)
    assert term(SegOutput(good), {"mask": mask}) < term(SegOutput(bad), {"mask": mask})
