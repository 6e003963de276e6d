"""SD-LayerNet: the layer engine on hand-made columns, curvature limits from hand-made labels,
any B-scan size, gradients, overfitting, and the parameter count of the official structure."""

from __future__ import annotations

import math

import pytest
import torch

from octseg.losses.sd_layernet import TopologyPrior
from octseg.models.base import SegOutput
from octseg.models.blocks.layer_engine import (
    column_softmax,
    column_std,
    curvature,
    estimate_curvature_limits,
    monotone_positions,
    region_masks,
    soft_argmax,
    topology_violations,
)
from octseg.models.sd_layernet import SDLayerNet
from tests.models.model_checks import ODD_BSCAN_SIZES, check_odd_size, params_without_grad

SMALL = {"channels": (4, 8, 8, 8, 8), "feature_channels": 8, "predictor_channels": 4,
         "predictor_kernel": 3, "encoder_grid": 2}  # fmt: skip


def one_hot_columns(rows: list[list[int]], height: int) -> torch.Tensor:
    """Distributions ``[1, S, H, W]`` with all mass at ``rows[s][x]``."""
    index = torch.tensor(rows)[None, :, None, :]
    return torch.zeros(1, len(rows), height, len(rows[0])).scatter_(2, index, 1.0)


def test_soft_argmax_of_a_one_hot_column_is_its_row() -> None:
    prob = one_hot_columns([[7, 0, 12]], height=13)
    assert soft_argmax(prob).tolist() == [[[7.0, 0.0, 12.0]]]
    assert column_std(prob, soft_argmax(prob)).max() < 1e-5
    # Two equal peaks at rows 2 and 6: mean 4, standard deviation 2.
    two = (one_hot_columns([[2]], 9) + one_hot_columns([[6]], 9)) / 2
    assert soft_argmax(two).item() == pytest.approx(4.0)
    assert column_std(two, soft_argmax(two)).item() == pytest.approx(2.0)
    # The softmax along depth normalises every column.
    prob, logprob = column_softmax(torch.randn(2, 3, 11, 5))
    torch.testing.assert_close(prob.sum(dim=2), torch.ones(2, 3, 5))
    torch.testing.assert_close(logprob.exp(), prob)


def test_topology_penalty_is_zero_when_ordered_and_positive_when_crossed() -> None:
    ordered = torch.tensor([[[2.0, 3.0], [5.0, 5.0], [9.0, 8.0]]])  # [1, S=3, W=2]
    assert topology_violations(ordered).abs().sum() == 0
    crossed = torch.tensor([[[6.0, 3.0], [5.0, 5.0], [9.0, 4.0]]])
    assert topology_violations(crossed).tolist() == [[[1.0, 0.0], [0.0, 1.0]]]
    term = TopologyPrior()
    assert term(SegOutput(torch.zeros(1), aux={"topology": topology_violations(ordered)}), {}) == 0
    value = term(SegOutput(torch.zeros(1), aux={"topology": topology_violations(crossed)}), {})
    assert value.item() == pytest.approx(2.0 / 2)  # summed violations / width
    # The 1-D correction makes positions monotone and keeps ordered ones.
    assert monotone_positions(crossed).tolist() == [[[6.0, 3.0], [6.0, 5.0], [9.0, 5.0]]]
    torch.testing.assert_close(monotone_positions(ordered), ordered)


def test_region_masks_sum_to_one_and_follow_one_hot_surfaces() -> None:
    prob, _ = column_softmax(torch.randn(2, 4, 16, 7) * 3)
    regions = region_masks(prob)
    assert regions.shape == (2, 5, 16, 7) and regions.min() >= -1e-6  # float32 cumsum
    torch.testing.assert_close(regions.sum(dim=1), torch.ones(2, 16, 7))
    # One-hot surfaces at rows 3 and 6: region 0 rows 0-2, region 1 rows 3-5, region 2 rows 6+.
    hard = region_masks(one_hot_columns([[3], [6]], height=9))[0, :, :, 0]
    assert hard.argmax(dim=0).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert hard.max(dim=0).values.eq(1).all()
    # Crossed surfaces (the second above the first): the 2-D correction empties the region
    # between them instead of producing negative masses.
    crossed = region_masks(one_hot_columns([[6], [3]], height=9))[0, :, :, 0]
    assert crossed.min() >= 0 and crossed[1].sum() == 0
    assert crossed.argmax(dim=0).tolist() == [0, 0, 0, 0, 0, 0, 2, 2, 2]


def _labels(surfaces: list[list[int]], height: int) -> torch.Tensor:
    """Region labels ``[H, W]`` of integer surfaces (region k between surfaces k-1 and k)."""
    rows = torch.arange(height)[:, None]
    return sum((rows >= torch.tensor(s)[None]).long() for s in surfaces)


def test_curvature_limits_from_hand_made_labels() -> None:
    # Surface 0 straight (curvature 0); surface 1 steps down one row at x = 30: around the
    # step f' = z(x+5) - z(x-5) = 1 and f'' = +-1, so |kappa| = 1 / 2^1.5 (module docstring).
    width = 60
    flat = [10] * width
    step = [20] * 30 + [21] * 30
    surfaces = torch.tensor([flat, step], dtype=torch.float32)
    kappa = curvature(surfaces[None])[0].abs()
    assert kappa[0].max() == 0 and kappa[1].max().item() == pytest.approx(2**-1.5)
    assert kappa[1, 25:35].min().item() == pytest.approx(2**-1.5) and kappa[1, :24].max() == 0
    valid = torch.ones(width, dtype=torch.bool)
    limits = estimate_curvature_limits([surfaces], [valid])
    assert limits.tolist() == pytest.approx([0.0, 2**-1.5])
    # Windows touching an unannotated column do not count: the step's columns masked out.
    masked = valid.clone()
    masked[30] = False
    assert estimate_curvature_limits([surfaces], [masked]).tolist() == pytest.approx([0.0, 0.0])
    # The quantile option: the step touches 10 of the 50 measurable columns.
    assert estimate_curvature_limits([surfaces], [valid], quantile=0.5)[1] == 0
    # From label maps through the module's surface convention (SDLayerNetModule).
    from octseg.modules.sd_layernet import surface_targets

    labels = _labels([flat, step], height=32)
    labels[:, :3] = 255  # unannotated columns at the left edge
    targets = surface_targets(labels[None], [0, 1, 2])
    assert targets["surface_rows"][0, :, 5].tolist() == [10.0, 20.0]
    assert targets["surface_valid"][0].tolist() == [False] * 3 + [True] * (width - 3)
    got = estimate_curvature_limits([targets["surface_rows"][0]], [targets["surface_valid"][0]])
    assert got.tolist() == pytest.approx([0.0, 2**-1.5])
    with pytest.raises(ValueError, match="quantile"):
        estimate_curvature_limits([surfaces], [valid], quantile=0.0)


def test_curvature_prior_uses_the_buffer_and_checkpoints_carry_it() -> None:
    net = SDLayerNet(1, 4, **SMALL)
    assert not net.curvature_estimated
    net.set_curvature_limits(torch.tensor([0.5, 1.0, 2.0]))
    state = net.state_dict()
    assert state["curvature_limits"].tolist() == [0.5, 1.0, 2.0]
    other = SDLayerNet(1, 4, **SMALL)
    other.load_state_dict(state)
    assert other.curvature_estimated and other.curvature_limits.tolist() == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match="3 non-negative values"):
        net.set_curvature_limits(torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize(("batch", "h", "w"), ODD_BSCAN_SIZES)
def test_any_bscan_size(batch: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    out = check_odd_size(SDLayerNet(1, 10, list(range(9))), batch, h, w, num_classes=10)
    assert out.aux["positions"].shape == (batch, 8, w)
    assert out.aux["recon"].shape == (batch, 1, h, w)
    probs = out.logits.softmax(dim=1)
    # Softmax of the logits = the region masks; the fluid label (9) is never predicted.
    torch.testing.assert_close(probs[:, :9], out.aux["regions"], atol=1e-4, rtol=0)
    assert probs[:, 9].max() < 1e-4
    # Positions lie within the true rows (the U-Net padding is cropped before the softmax).
    assert out.aux["positions"].max() <= h - 1


@pytest.mark.parametrize("width", [37, 64, 131])
def test_odd_widths_in_training_mode(width: int) -> None:
    torch.manual_seed(0)
    net = SDLayerNet(1, 5, **SMALL).train()
    out = net(torch.randn(2, 1, 41, width))
    assert out.logits.shape == (2, 5, 41, width)
    assert out.aux["curvature_excess"].shape == (2, 4, width)
    assert out.aux["continuity"].shape == (2, 4, width - 1)


def test_bad_region_labels_raise() -> None:
    with pytest.raises(ValueError, match="at least 2 distinct"):
        SDLayerNet(1, 4, ordered_labels=[0, 0, 1])
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\)"):
        SDLayerNet(1, 4, ordered_labels=[0, 1, 4])


def test_parameter_counts_match_the_official_structure() -> None:
    """Counted on the official code patched to build (Attention_block keywords, .cuda())."""
    official = SDLayerNet(1, 12)
    parts = {k: sum(p.numel() for p in getattr(official, k).parameters())
             for k in ("unet", "layer_predictor", "modality_encoder", "decoder")}  # fmt: skip
    assert parts == {"unet": 12_655_068, "layer_predictor": 496_203,
                     "modality_encoder": 141_134, "decoder": 24_401}  # fmt: skip
    assert sum(p.numel() for p in official.parameters()) == 13_316_806
    duke = SDLayerNet(1, 10, list(range(9)))
    assert sum(p.numel() for p in duke.parameters()) == 13_315_843


def test_straight_through_rounding_and_eval_uses_the_mean() -> None:
    torch.manual_seed(0)
    net = SDLayerNet(1, 4, **SMALL).eval()
    x = torch.randn(2, 1, 24, 30)
    with torch.no_grad():
        a, b = net(x), net(x)
    torch.testing.assert_close(a.aux["recon"], b.aux["recon"])  # z = mu in eval mode
    assert set(a.aux["hard_anatomy"].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(a.aux["hard_anatomy"], a.aux["regions"].round())
    assert math.isclose(float(a.logits.min()), math.log(1e-6), rel_tol=1e-5)


def test_backward_reaches_every_parameter() -> None:
    from tests.modules.test_sd_layernet import make_module, toy_batch

    torch.manual_seed(0)
    module = make_module()
    batch = toy_batch(labelled=[True, True, False, False])
    module.train()
    loss = module.training_step(batch, 0)
    loss.backward()
    missing = params_without_grad(module.net)
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
