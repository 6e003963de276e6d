"""Dice + CE and deep supervision terms, and the Objective that weighs them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from octseg.losses import DeepSupervisionLoss, DiceCELoss, Objective, SoftDiceLoss
from octseg.losses.terms import check_term
from octseg.models.base import SegOutput


def _batch(h: int = 8, w: int = 6, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    target = torch.randint(0, k, (2, h, w))
    return torch.randn(2, k, h, w, requires_grad=True), target


def test_ignored_pixels_add_nothing() -> None:
    logits, target = _batch()
    loss = DiceCELoss(ignore_index=255)
    masked = target.clone()
    masked[:, :, 3:] = 255
    full_value = loss.compute(logits[..., :3], target[..., :3])
    masked_value = loss.compute(logits, masked)
    assert masked_value.item() == pytest.approx(full_value.item(), rel=1e-5)
    masked_value.backward()
    assert torch.all(logits.grad[..., 3:] == 0)


def test_ce_part_matches_torch() -> None:
    logits, target = _batch()
    value = DiceCELoss(dice_weight=0.0).compute(logits, target)
    assert value.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)


def test_perfect_prediction_has_near_zero_dice_loss() -> None:
    _, target = _batch()
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert DiceCELoss().compute(logits, target).item() < 1e-3


def test_all_ignored_batch_is_zero_not_nan() -> None:
    logits, target = _batch()
    value = DiceCELoss().compute(logits, torch.full_like(target, 255))
    assert torch.isfinite(value)


def test_out_of_range_labels_are_reported() -> None:
    logits, target = _batch()
    target[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"labels \[7\] outside 0..2"):
        DiceCELoss().compute(logits, target)


def test_deep_supervision_weights_and_downsampling() -> None:
    logits, target = _batch(h=8, w=8)
    low = torch.randn(2, 3, 4, 4)
    term = DiceCELoss()
    ds = DeepSupervisionLoss(term)
    out = SegOutput(logits=logits, aux={"deep_supervision": [low]})
    small_target = target[:, ::2, ::2]  # nearest downsampling by 2 picks the top-left pixel
    expected = (term.compute(logits, target) + 0.5 * term.compute(low, small_target)) / 1.5
    assert ds(out, {"mask": target}).item() == pytest.approx(expected.item(), rel=1e-6)


def test_objective_sums_weighted_terms_and_regularisers() -> None:
    logits, target = _batch()
    out = SegOutput(logits=logits, reg={"smooth": torch.tensor(2.0)})
    obj = Objective({"ce": DiceCELoss(dice_weight=0.0)}, weights={"ce": 0.5, "smooth": 0.1})
    values = obj(out, {"mask": target})
    assert values["loss"].item() == pytest.approx(0.5 * values["ce"].item() + 0.2, rel=1e-6)
    with pytest.raises(ValueError, match="neither loss terms"):
        Objective({"ce": DiceCELoss()}, weights={"typo": 1.0})(out, {"mask": target})


def test_wrapping_terms_reject_a_term_without_compute() -> None:
    with pytest.raises(TypeError, match="DeepSupervisionLoss needs .*compute.*got Identity"):
        DeepSupervisionLoss(torch.nn.Identity())
    check_term(DiceCELoss(), "AnyOwner")  # has compute: accepted


def test_soft_dice_by_hand_pooled_and_per_class() -> None:
    """Two pixels, p = (0.75, 0.25) with label 0 and (0.5, 0.5) with label 1, smooth 1."""
    probs = torch.tensor([[0.75, 0.5], [0.25, 0.5]]).view(1, 2, 1, 2)
    logits, target = probs.log(), torch.tensor([[[0, 1]]])
    # Pooled (RetiFluidNet): (2 x (0.75 + 0.5) + 1) / (2 + 2 + 1) = 0.7.
    assert SoftDiceLoss().compute(logits, target).item() == pytest.approx(0.3)
    # Per class: (1.5 + 1) / (1.25 + 1 + 1) and (1 + 1) / (0.75 + 1 + 1), averaged.
    per_class = 1 - (2.5 / 3.25 + 2 / 2.75) / 2
    got = SoftDiceLoss(pool_classes=False).compute(logits, target)
    assert got.item() == pytest.approx(per_class)
    no_bg = SoftDiceLoss(pool_classes=False, include_background=False).compute(logits, target)
    assert no_bg.item() == pytest.approx(1 - 2 / 2.75)
    # An ignored pixel counts in no sum: only the first pixel is left.
    ignored = SoftDiceLoss().compute(logits, torch.tensor([[[0, 255]]]))
    assert ignored.item() == pytest.approx(1 - (2 * 0.75 + 1) / (1 + 1 + 1))


def test_retifluidnet_multiscale_dice_weights_are_1_1_half_quarter_eighth(make_cfg) -> None:
    """conf/loss/retifluidnet.yaml: main + side outputs weighted as given, not normalised; the
    connectivity loss enters with 0.05."""
    import hydra

    cfg = make_cfg("loss=retifluidnet", "dataset=synthetic_small")
    objective = hydra.utils.instantiate(cfg.loss)
    torch.manual_seed(5)
    k, h, w = 3, 6, 7
    target = torch.randint(0, k, (2, h, w))
    outputs = [torch.randn(2, k, h, w) for _ in range(5)]
    conn = [torch.randn(2, k, 8, h, w) for _ in range(5)]
    out = SegOutput(outputs[0], aux={"deep_supervision": outputs[1:], "connectivity": conn})
    terms = objective(out, {"mask": target})
    single = [SoftDiceLoss().compute(o, target).item() for o in outputs]
    expected = sum(wt * d for wt, d in zip([1, 1, 0.5, 0.25, 0.125], single, strict=True))
    assert terms["dice"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(
        expected + 0.05 * terms["connectivity"].item(), rel=1e-6
    )


def test_deep_supervision_can_keep_weights_unnormalised() -> None:
    logits, target = _batch()
    term = DiceCELoss()
    out = SegOutput(logits, aux={"deep_supervision": [logits * 2]})
    plain = DeepSupervisionLoss(term, weights=[1.0, 0.5], normalise=False)(out, {"mask": target})
    normal = DeepSupervisionLoss(term, weights=[1.0, 0.5])(out, {"mask": target})
    assert plain.item() == pytest.approx(1.5 * normal.item(), rel=1e-6)
    parts = term.compute(logits, target) + 0.5 * term.compute(logits * 2, target)
    assert plain.item() == pytest.approx(parts.item(), rel=1e-6)
