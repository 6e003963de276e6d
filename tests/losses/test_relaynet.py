"""ReLayNet's weighted logistic loss and Dice on hand-built masks."""

from __future__ import annotations

import math

import hydra
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


def test_relaynet_recipe_loss_constants(make_cfg) -> None:
    """experiment=relaynet_duke trains 1.0 x weighted log loss (w = 1 + 10 boundary + 5 on the
    seven layers and fluid) + 0.5 x Dice, as the paper and skyfu1022/ReLayNet-tensorflow."""
    cfg = make_cfg("experiment=relaynet_duke")
    objective = hydra.utils.instantiate(cfg.loss)
    assert objective.weights == {"weighted_ce": 1.0, "dice": 0.5}
    ce = objective.terms["weighted_ce"]
    assert (ce.boundary_weight, ce.class_weight) == (10.0, 5.0)
    assert sorted(ce.weighted_labels) == [1, 2, 3, 4, 5, 6, 7, 9]  # not 0 (vitreous), 8 (choroid)


def _matconvnet_sgd(w: torch.Tensor, grad_fn, lrs: list[float]) -> torch.Tensor:
    """ReLayNet's official update (cnn_train_dag_seg.m, accumulate_gradients), batch 8."""
    v = torch.zeros_like(w)
    for lr in lrs:
        v = 0.95 * v - 1e-4 * w - grad_fn(w) / 8
        w = w + lr * v
    return w


def test_relaynet_recipe_matches_the_official_matconvnet_update(make_cfg) -> None:
    """The config's torch SGD (lr, weight decay, momentum, MultiStepLR) takes the same steps on a
    mean loss as the official MatConvNet trainer with lr 0.1 -> 1e-3 -> 1e-4 and decay 1e-4."""
    cfg = make_cfg("experiment=relaynet_duke")
    assert cfg.optimizer.lr == 0.0125 and cfg.optimizer.weight_decay == 8e-4
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    hessian = a @ a.T / 6 + torch.eye(6, dtype=torch.float64)
    target = torch.randn(6, generator=g, dtype=torch.float64)

    def grad_fn(w: torch.Tensor) -> torch.Tensor:  # gradient of a quadratic "mean loss"
        return hessian @ w - target

    w0 = torch.randn(6, generator=g, dtype=torch.float64)
    param = torch.nn.Parameter(w0.clone())
    opt = hydra.utils.instantiate(cfg.optimizer)(params=[param])
    sched = hydra.utils.instantiate(cfg.scheduler.factory)(optimizer=opt)
    # One step per "epoch" so the milestones (160, 320) fall inside a short run.
    epochs = 340
    for _ in range(epochs):
        opt.zero_grad()
        param.grad = grad_fn(param.detach())
        opt.step()
        sched.step()
    official_lrs = [0.1 if e < 160 else 1e-3 if e < 320 else 1e-4 for e in range(epochs)]
    expected = _matconvnet_sgd(w0, grad_fn, official_lrs)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-9, atol=1e-12)
