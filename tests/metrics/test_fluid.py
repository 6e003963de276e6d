"""Fluid family: area, volume and detection on hand-built masks, with per-scan spacing."""

from __future__ import annotations

import math

import pytest
import torch

from octseg.metrics.suite import MetricSuite
from tests.metrics.metric_cases import layered_map, make_suite


def _suite(families, **kw) -> MetricSuite:
    return make_suite(families, spacing_um=[4.0, 10.0], **kw)


def _two_fluid_scans() -> tuple[torch.Tensor, torch.Tensor]:
    """Scan 1: 20 reference fluid pixels, 10 predicted; scan 2: none, 3 false positive."""
    base = layered_map()
    t1, p1 = base.clone(), base.clone()
    t1[30:34, 5:10] = 9
    p1[30:32, 5:10] = 9
    t2, p2 = base.clone(), base.clone()
    p2[30:31, 0:3] = 9
    return torch.stack([p1, p2]), torch.stack([t1, t2])


def test_fluid_area_volume_and_detection() -> None:
    pred, target = _two_fluid_scans()
    suite = _suite(["fluid"], bscan_spacing_um=100.0)
    suite.update(pred, target, torch.tensor([0, 0]))
    out = suite.compute()
    px = 4.0 * 10.0 * 1e-6
    assert out["fluid_area_abs_err_mm2/fluid"].item() == pytest.approx((10 * px + 3 * px) / 2)
    assert out["volume/fluid_volume_abs_err_mm3"].item() == pytest.approx(7 * px * 0.1)
    assert out["fluid_detection_sensitivity"].item() == 1.0
    assert out["fluid_detection_specificity"].item() == 0.0


def test_fluid_area_and_volume_use_each_scans_spacing() -> None:
    pred, target = _two_fluid_scans()
    px1, px2 = 4.0 * 10.0 * 1e-6, 5.0 * 12.0 * 1e-6  # mm^2 per pixel of each scan
    suite = _suite(["fluid"], bscan_spacing_um=120.0)
    # scan 2 gives no B-scan distance (NaN): the suite's bscan_spacing_um stands in
    spacing = torch.tensor([[4.0, 10.0, 100.0], [5.0, 12.0, math.nan]])
    suite.update(pred, target, torch.tensor([0, 1]), spacing_um=spacing)
    out = suite.compute()
    assert out["fluid_area_abs_err_mm2/fluid"].item() == pytest.approx((10 * px1 + 3 * px2) / 2)
    assert out["fluid_area_bias_mm2"].item() == pytest.approx((-10 * px1 + 3 * px2) / 2)
    # |V_pred - V_true| per volume: error area x the scan's B-scan distance in mm
    expected = (10 * px1 * 0.100 + 3 * px2 * 0.120) / 2
    assert out["volume/fluid_volume_abs_err_mm3"].item() == pytest.approx(expected)
    area = suite.per_scan()["fluid"]["area_true_mm2"][:, 0]
    assert area.tolist() == pytest.approx([20 * px1, 0.0])
    # one volume holding both scans sums each scan's own slab volume
    pooled = _suite(["fluid"], bscan_spacing_um=120.0)
    pooled.update(pred, target, torch.tensor([0, 0]), spacing_um=spacing)
    slabs = -10 * px1 * 0.100 + 3 * px2 * 0.120
    assert pooled.compute()["volume/fluid_volume_abs_err_mm3"].item() == pytest.approx(abs(slabs))


def test_unknown_bscan_distance_leaves_that_volume_out() -> None:
    pred, target = _two_fluid_scans()
    suite = _suite(["fluid"])  # no bscan_spacing_um to fall back on
    spacing = torch.tensor([[4.0, 10.0, 100.0], [5.0, 12.0, math.nan]])
    suite.update(pred, target, torch.tensor([0, 1]), spacing_um=spacing)
    out = suite.compute()
    assert out["volume/fluid_volume_abs_err_mm3"].item() == pytest.approx(10 * 40e-6 * 0.1)
    without = _suite(["fluid"])
    without.update(pred, target, torch.tensor([0, 1]), spacing_um=spacing[:, :2])
    assert math.isnan(without.compute()["volume/fluid_volume_abs_err_mm3"].item())


def test_per_scan_spacing_equal_to_the_configured_one_changes_nothing() -> None:
    pred, target = _two_fluid_scans()
    configured = _suite(["fluid"], bscan_spacing_um=100.0)
    configured.update(pred, target, torch.tensor([0, 1]))
    explicit = _suite(["fluid"], bscan_spacing_um=100.0)
    rows = torch.tensor([[4.0, 10.0]] * 2)
    explicit.update(pred, target, torch.tensor([0, 1]), spacing_um=rows)
    a, b = configured.compute(), explicit.compute()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], equal_nan=True, msg=key)
