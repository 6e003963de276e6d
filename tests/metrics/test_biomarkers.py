"""Fluid area/volume/detection, CVI, thickness and topology on hand-built masks."""

from __future__ import annotations

import pytest
import torch

from octseg.metrics.suite import MetricSuite
from octseg.metrics.surfaces import (
    extract_surfaces,
    label_ranks,
    layer_thickness,
    thickness_profiles,
)

from metric_cases import ANATOMY, layered_map, make_suite


def _suite(metrics, **kw) -> MetricSuite:
    return make_suite(metrics, spacing_um=[4.0, 10.0], **kw)


def test_fluid_area_volume_and_detection() -> None:
    base = layered_map()
    t1, p1 = base.clone(), base.clone()
    t1[30:34, 5:10] = 9  # 20 px
    p1[30:32, 5:10] = 9  # 10 px
    t2, p2 = base.clone(), base.clone()
    p2[30:31, 0:3] = 9  # false positive scan, 3 px
    suite = _suite(["fluid"], bscan_spacing_um=100.0)
    suite.update(torch.stack([p1, p2]), torch.stack([t1, t2]), torch.tensor([0, 0]))
    out = suite.compute()
    px = 4.0 * 10.0 * 1e-6
    assert out["fluid_area_abs_err_mm2/fluid"].item() == pytest.approx((10 * px + 3 * px) / 2)
    assert out["volume/fluid_volume_abs_err_mm3"].item() == pytest.approx(7 * px * 0.1)
    assert out["fluid_detection_sensitivity"].item() == 1.0
    assert out["fluid_detection_specificity"].item() == 0.0


def test_cvi_on_hand_built_choroid() -> None:
    anatomy = {"ordered_labels": [0, 1, 2], "lumen_labels": [2], "choroid_labels": [1]}
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, 5:, :] = 1
    target[0, 6:8, 2:7] = 2  # lumen: 10 of 50 choroid pixels -> CVI 0.2
    pred = target.clone()
    pred[0, 8, 2:7] = 2  # 15 of 50 -> 0.3
    suite = MetricSuite(metrics=["cvi"], num_classes=3, anatomy=anatomy)
    suite.update(pred, target)
    out = suite.compute()
    assert out["cvi_true"].item() == pytest.approx(0.2)
    assert out["cvi_pred"].item() == pytest.approx(0.3)
    assert out["cvi_abs_err"].item() == pytest.approx(0.1)
    inactive = _suite(["cvi"])
    inactive.update(target.expand(1, 10, 10).clone() * 0, target * 0)
    assert "cvi_abs_err" not in inactive.compute()  # no lumen labels: inactive


def test_thickness_profile_and_error() -> None:
    target = layered_map()[None]
    pred = target.clone()
    pred[0, 19:21, :16] = 2  # INL (rows 19..23) loses 2 rows to GCIPL in half the columns
    z, defined = extract_surfaces(target, ANATOMY["ordered_labels"])
    thick = layer_thickness(z, 60, [1, 2, 3], 4.0)
    assert thick[0, :, 0].tolist() == [16.0, 20.0, 16.0]
    suite = _suite(["thickness"])
    suite.update(pred, target)
    out = suite.compute()
    assert out["thickness_mae_um/INL"].item() == pytest.approx(8.0 / 2)
    assert out["thickness_mae_um/GCIPL"].item() == pytest.approx(8.0 / 2)
    assert out["thickness_mae_um/RNFL"].item() == 0.0


def test_topology_flags_out_of_order_columns() -> None:
    target = layered_map()[None]
    pred = target.clone()
    pred[0, 50:52, 0:4] = 1  # RNFL island below the choroid boundary in 4 of 32 columns
    pred[0, 30:33, 10:12] = 9  # fluid inside ONL is not a violation
    suite = _suite(["topology"])
    suite.update(pred, target)
    assert suite.compute()["topology_violation_rate"].item() == pytest.approx(4 / 32)


def test_fluid_remap_uses_nearest_layer_in_the_column() -> None:
    col = torch.tensor([0, 0, 1, 9, 9, 9, 9, 2, 2, 255]).view(1, 10, 1)
    rank, defined = label_ranks(col, [0, 1, 2])
    assert rank[0, :, 0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert defined.all()
    empty = torch.full((1, 5, 2), 255)
    assert not label_ranks(empty, [0, 1, 2])[1].any()


def test_thickness_profiles_are_nan_on_undefined_columns() -> None:
    labels = layered_map()
    labels[:, 30:] = 255
    profile = thickness_profiles(labels, ANATOMY["ordered_labels"], [1, 5], 4.0)
    assert profile.shape == (2, 32)
    assert profile[0, 0].item() == 16.0 and profile[1, 0].item() == 36.0
    assert torch.isnan(profile[:, 30:]).all()
