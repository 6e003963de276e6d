"""Surface extraction and the boundary family, with per-scan and per-volume spacing."""

from __future__ import annotations

import pytest
import torch

from octseg.metrics.surfaces import label_ranks
from tests.metrics.metric_cases import layered_map, make_suite


def test_fluid_remap_uses_nearest_layer_in_the_column() -> None:
    col = torch.tensor([0, 0, 1, 9, 9, 9, 9, 2, 2, 255]).view(1, 10, 1)
    rank, defined = label_ranks(col, [0, 1, 2])
    assert rank[0, :, 0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert defined.all()
    empty = torch.full((1, 5, 2), 255)
    assert not label_ranks(empty, [0, 1, 2])[1].any()


def test_two_volumes_with_two_axial_spacings_in_one_suite() -> None:
    """A 2-row surface offset is 2 x 3.87 = 7.74 um in volume 0 and 2 x 5.0 = 10.0 um in
    volume 1; the dataset value pools the A-scans (8 + 4 columns), ``volume/`` averages the
    two volume values."""
    suite = make_suite(["boundary"], spacing_um=[1.0, 1.0])
    for vol, width, axial in ((0, 8, 3.87), (1, 4, 5.0)):
        target = layered_map(width=width)[None]
        pred = layered_map(width=width, shift=2)[None]
        spacing = torch.tensor([[axial, 11.3, 120.0]])
        suite.update(pred, target, torch.tensor([vol]), spacing_um=spacing)
    out = suite.compute()
    assert suite.per_scan()["boundary"]["mad_um"][:, 0].tolist() == pytest.approx([7.74, 10.0])
    assert out["mad_um"].item() == pytest.approx((8 * 7.74 + 4 * 10.0) / 12)
    assert out["bias_um/ILM"].item() == pytest.approx((8 * 7.74 + 4 * 10.0) / 12)
    assert out["rmse_um"].item() == pytest.approx(((8 * 7.74**2 + 4 * 10.0**2) / 12) ** 0.5)
    assert out["max_um"].item() == pytest.approx((7.74 + 10.0) / 2)  # mean of per-scan maxima
    assert out["volume/mad_um"].item() == pytest.approx((7.74 + 10.0) / 2)
    one = suite.compute_subset(suite.volume_index_rows == 1)
    assert one["mad_um"].item() == pytest.approx(10.0)


def test_per_row_spacing_in_one_batch_equals_separate_updates() -> None:
    target = torch.stack([layered_map(), layered_map(shift=1)])
    pred = torch.stack([layered_map(shift=2), layered_map(shift=-1)])
    spacing = torch.tensor([[3.87, 11.3], [5.0, 11.3]])
    batched = make_suite(["boundary"])
    batched.update(pred, target, torch.tensor([0, 1]), spacing_um=spacing)
    single = make_suite(["boundary"])
    for i in range(2):
        single.update(
            pred[i : i + 1], target[i : i + 1], torch.tensor([i]), spacing_um=spacing[i : i + 1]
        )
    a, b = batched.compute(), single.compute()
    for key in a:
        torch.testing.assert_close(a[key], b[key], equal_nan=True, msg=key)
    assert a["bias_um"].item() == pytest.approx((2 * 3.87 - 2 * 5.0) / 2)
