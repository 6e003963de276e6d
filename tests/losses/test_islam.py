"""ISLAM's signed distance targets and clamped Gaussian NLL, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from octseg.losses.islam import (
    ClampedGaussianNLL,
    clamped_gaussian_nll,
    fill_undefined_columns,
    sdf_targets,
    signed_distance_maps,
)
from octseg.models.base import SegOutput


def test_straight_surface_is_the_vertical_offset_of_pixel_centres() -> None:
    # Surface between rows 4 and 5 (edge coordinate 5): row i's centre is i + 0.5.
    sdf = signed_distance_maps(torch.full((1, 1, 9), 5.0), height=10, max_distance=30)
    expected = torch.tensor([-4.5, -3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5])
    for col in range(9):
        torch.testing.assert_close(sdf[0, 0, :, col], expected)


@pytest.mark.parametrize("slope", [1.0, 0.5, -2.0])
def test_tilted_surface_is_the_perpendicular_distance(slope: float) -> None:
    # Straight line through (j + 0.5, 20 + slope * j): perpendicular distance of pixel centre
    # (j + 0.5, i + 0.5) is the vertical offset times cos(atan(slope)).
    width, height = 121, 120
    cols = torch.arange(width, dtype=torch.float32)
    z = (60 + slope * (cols - 60)).view(1, 1, width)
    sdf = signed_distance_maps(z, height, max_distance=30)
    rows = torch.arange(height, dtype=torch.float32).view(height, 1) + 0.5
    expected = (rows - z[0, 0]) / math.sqrt(1 + slope**2)
    centre = slice(55, 66)  # feet of the perpendiculars inside the image
    near = expected[:, centre].abs() < 30
    torch.testing.assert_close(sdf[0, 0][:, centre][near], expected[:, centre][near])
    assert (sdf[0, 0][:, centre][~near].abs() == 30).all()  # saturated at max_distance


def test_distances_saturate_at_max_distance_with_the_sign_kept() -> None:
    sdf = signed_distance_maps(torch.full((1, 1, 5), 50.0), height=100, max_distance=10)
    assert sdf[0, 0, 0, 0] == -10 and sdf[0, 0, -1, 0] == 10
    assert sdf[0, 0, 45, 0] == pytest.approx(-4.5)


def test_a_step_surface_uses_euclidean_distance_to_the_polyline() -> None:
    # Surface at 10 for columns 0..4 and 20 for 5..9: the polyline joins (4.5, 10) and
    # (5.5, 20). Pixel (row 4, col 7) has centre (7.5, 4.5): nearest point is (4.5, 10).
    z = torch.tensor([[[10.0] * 5 + [20.0] * 5]])
    sdf = signed_distance_maps(z, 30, max_distance=30)
    assert sdf[0, 0, 4, 7] == pytest.approx(-math.hypot(3.0, 5.5), abs=1e-5)
    # Row 15 of column 5 lies above its own surface (20), 0.45 px from the jump segment.
    seg = torch.tensor([1.0, 10.0]) / math.hypot(1.0, 10.0)  # direction of the jump
    p = torch.tensor([5.5 - 4.5, 15.5 - 10.0])
    perp = abs(float(p[0] * seg[1] - p[1] * seg[0]))
    assert sdf[0, 0, 15, 5] == pytest.approx(-perp, abs=1e-5)


def test_fill_undefined_columns_interpolates_and_extends() -> None:
    z = torch.tensor([[[0.0, 10.0, 0.0, 0.0, 40.0, 0.0]]])
    defined = torch.tensor([[False, True, False, False, True, False]])
    filled = fill_undefined_columns(z, defined)
    torch.testing.assert_close(filled[0, 0], torch.tensor([10.0, 10.0, 20.0, 30.0, 40.0, 40.0]))
    nothing = fill_undefined_columns(z, torch.zeros_like(defined))
    torch.testing.assert_close(nothing, z)


def _layered_mask(height: int = 20, width: int = 8) -> torch.Tensor:
    """Regions 0 / 1 / 2 with surfaces at rows 5 and 12."""
    mask = torch.zeros(1, height, width, dtype=torch.long)
    mask[:, 5:12] = 1
    mask[:, 12:] = 2
    return mask


def test_sdf_targets_follow_the_label_map_and_its_anatomy() -> None:
    mask = _layered_mask()
    mask[0, 7:9, 3] = 3  # fluid inside layer 1: remapped, the surfaces do not move
    mask[0, :, 6] = 255  # an untraced column
    sdf, valid = sdf_targets(mask, [0, 1, 2], max_distance=30)
    assert sdf.shape == (1, 2, 20, 8) and valid.shape == (1, 1, 20, 8)
    rows = torch.arange(20, dtype=torch.float32) + 0.5
    for col in range(8):
        torch.testing.assert_close(sdf[0, 0, :, col], rows - 5)
        torch.testing.assert_close(sdf[0, 1, :, col], rows - 12)
    assert valid[0, 0, :, 6].sum() == 0 and valid[0, 0, :, [0, 3, 7]].all()


def test_sdf_targets_exclude_batch_padding() -> None:
    mask = _layered_mask(20, 8).repeat(2, 1, 1)
    mask[1, 16:] = 255
    mask[1, :, 5:] = 255
    orig_hw = torch.tensor([[20, 8], [16, 5]])
    sdf, valid = sdf_targets(mask, [0, 1, 2], orig_hw, max_distance=30)
    assert valid[0].all()
    assert valid[1, 0, :16, :5].all() and not valid[1, 0, 16:].any()
    assert not valid[1, 0, :, 5:].any()
    torch.testing.assert_close(sdf[1, :, :16, :5], sdf[0, :, :16, :5])


def test_nll_by_hand() -> None:
    mean = torch.tensor([1.0, 2.0]).view(1, 1, 2, 1)
    log_var = torch.tensor([0.0, math.log(4.0)]).view(1, 1, 2, 1)
    target = torch.tensor([0.0, 0.0]).view(1, 1, 2, 1)
    valid = torch.ones(1, 1, 2, 1, dtype=torch.bool)
    # 0.5 * (1 / 1 + 0) and 0.5 * (4 / 4 + log 4), averaged.
    expected = (0.5 + 0.5 * (1 + math.log(4.0))) / 2
    assert clamped_gaussian_nll(mean, log_var, target, valid) == pytest.approx(expected)


def test_nll_clamps_prediction_and_target_at_delta() -> None:
    valid = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    zero = torch.zeros(1, 1, 1, 1)
    far = clamped_gaussian_nll(torch.full_like(zero, 80.0), zero, torch.full_like(zero, 45.0),
                               valid, delta=30.0)  # fmt: skip
    assert far == 0.0
    mean = torch.full_like(zero, 100.0, requires_grad=True)
    clamped_gaussian_nll(mean, zero, zero, valid, delta=30.0).backward()
    assert mean.grad.abs().sum() == 0  # clamped: no gradient beyond delta (as official)
    inside = clamped_gaussian_nll(torch.full_like(zero, 35.0), zero, zero, valid, delta=30.0)
    assert inside == pytest.approx(0.5 * 30.0**2)


def test_nll_ignores_invalid_columns_and_averages_per_image() -> None:
    mean = torch.zeros(2, 1, 4, 3, requires_grad=True)
    log_var = torch.zeros(2, 1, 4, 3)
    target = torch.ones(2, 1, 4, 3)
    target[0, :, :, 2] = 100.0  # column 2 of image 0 is not traced
    valid = torch.ones(2, 1, 4, 3, dtype=torch.bool)
    valid[0, :, :, 2] = False
    valid[1, :, 2:] = False  # image 1 has fewer valid pixels: its mean still weighs 1/2
    loss = clamped_gaussian_nll(mean, log_var, target, valid)
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert mean.grad[0, :, :, 2].abs().sum() == 0 and mean.grad[1, :, 2:].abs().sum() == 0
    none = clamped_gaussian_nll(mean, log_var, target, torch.zeros_like(valid))
    assert none.item() == 0.0 and none.requires_grad


def test_loss_term_reads_aux_and_the_batch_mask() -> None:
    mask = _layered_mask()
    sdf, _ = sdf_targets(mask, [0, 1, 2])
    term = ClampedGaussianNLL([0, 1, 2], num_classes=4)
    exact = SegOutput(torch.zeros(1, 4, 20, 8), aux={"sdf_mean": sdf, "sdf_logvar": sdf * 0})
    assert term(exact, {"mask": mask}).item() == pytest.approx(0.0, abs=1e-6)
    shifted = SegOutput(exact.logits, aux={"sdf_mean": sdf + 2, "sdf_logvar": sdf * 0})
    assert term(shifted, {"mask": mask}).item() == pytest.approx(2.0)
    with pytest.raises(KeyError, match="sdf_logvar"):
        term(SegOutput(exact.logits, aux={"sdf_mean": sdf}), {"mask": mask})
    with pytest.raises(ValueError, match="ordered_labels"):
        ClampedGaussianNLL([0, 1, 2, 3])(exact, {"mask": mask})
    with pytest.raises(ValueError, match="at least two"):
        ClampedGaussianNLL([0])
