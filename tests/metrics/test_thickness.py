"""Thickness family and profiles on hand-built layer maps, with per-scan axial spacing."""

from __future__ import annotations

import pytest
import torch

from octseg.metrics.surfaces import extract_surfaces
from octseg.metrics.thickness import layer_thickness, thickness_profiles
from tests.metrics.metric_cases import ANATOMY, layered_map, make_suite


def _thinner_inl() -> tuple[torch.Tensor, torch.Tensor]:
    """INL (rows 19..23) loses 2 rows to GCIPL in half of the 32 columns."""
    target = layered_map()[None]
    pred = target.clone()
    pred[0, 19:21, :16] = 2
    return pred, target


def test_thickness_profile_and_error() -> None:
    pred, target = _thinner_inl()
    z, defined = extract_surfaces(target, ANATOMY["ordered_labels"])
    thick = layer_thickness(z, 60, [1, 2, 3], 4.0)
    assert thick[0, :, 0].tolist() == [16.0, 20.0, 16.0]
    suite = make_suite(["thickness"], spacing_um=[4.0, 10.0])
    suite.update(pred, target)
    out = suite.compute()
    assert out["thickness_mae_um/INL"].item() == pytest.approx(8.0 / 2)
    assert out["thickness_mae_um/GCIPL"].item() == pytest.approx(8.0 / 2)
    assert out["thickness_mae_um/RNFL"].item() == 0.0


def test_thickness_uses_each_scans_axial_spacing() -> None:
    pred, target = _thinner_inl()
    suite = make_suite(["thickness"], spacing_um=[1.0, 1.0])
    spacing = torch.tensor([[4.0, 10.0], [5.0, 10.0]])
    suite.update(pred.expand(2, -1, -1), target.expand(2, -1, -1), spacing_um=spacing)
    rows = suite.per_scan()["thickness"]["mean_abs_err_um"][:, 2]  # INL
    assert rows.tolist() == pytest.approx([2 * 4.0 / 2, 2 * 5.0 / 2])
    # pooled over the A-scans of both scans (equal widths: the mean of the two)
    assert suite.compute()["thickness_mae_um/INL"].item() == pytest.approx(4.5)
    per_map = layer_thickness(
        extract_surfaces(target.expand(2, -1, -1), ANATOMY["ordered_labels"])[0],
        60,
        [3],
        torch.tensor([4.0, 5.0]),
    )
    assert per_map[:, 0, 0].tolist() == [16.0, 20.0]


def test_thickness_profiles_are_nan_on_undefined_columns() -> None:
    labels = layered_map()
    labels[:, 30:] = 255
    profile = thickness_profiles(labels, ANATOMY["ordered_labels"], [1, 5], 4.0)
    assert profile.shape == (2, 32)
    assert profile[0, 0].item() == 16.0 and profile[1, 0].item() == 36.0
    assert torch.isnan(profile[:, 30:]).all()
