"""Surface distances against MONAI and hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from octseg.metrics.distances import compute_surface_distances, label_boundaries
from tests.metrics.metric_cases import layered_map, make_suite


def _monai(pred: np.ndarray, target: np.ndarray, k: int, spacing) -> np.ndarray:
    def onehot(x: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.from_numpy(x), k).permute(2, 0, 1)[None]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, t = onehot(pred), onehot(target)
        hd = compute_hausdorff_distance(p, t, include_background=True, spacing=spacing)
        hd95 = compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=spacing
        )
        assd = compute_average_surface_distance(
            p, t, include_background=True, symmetric=True, spacing=spacing
        )
    return torch.stack([hd[0], hd95[0], assd[0]], dim=1).double().numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (3.87, 11.3)])
def test_matches_monai_on_random_blobs(seed: int, spacing) -> None:
    rng = np.random.default_rng(seed)
    k = 4
    target = np.zeros((40, 36), dtype=np.int64)
    pred = np.zeros_like(target)
    for arr in (target, pred):
        for _ in range(5):
            r, c = rng.integers(0, 34, size=2)
            arr[r : r + rng.integers(2, 8), c : c + rng.integers(2, 8)] = rng.integers(1, k)
    pred[rng.random(pred.shape) < 0.02] = 2  # scattered islands
    ours = compute_surface_distances(pred, target, list(range(k)), spacing)
    ref = _monai(pred, target, k, spacing)
    # Where one mask is empty MONAI gives HD = inf but HD95 = NaN (quantile of infs, MONAI
    # #9095); OCTSeg reports inf for all three and counts a failure.
    one_empty = np.isinf(ref[:, 0])
    assert np.isinf(ours[one_empty]).all()
    np.testing.assert_allclose(ours[~one_empty], ref[~one_empty], rtol=1e-5, atol=1e-4)


def test_layered_map_matches_monai_with_shift_and_fluid() -> None:
    target = layered_map().numpy()
    pred = layered_map(shift=2).numpy()
    target[30:34, 5:12] = 9
    pred[29:35, 6:10] = 9
    ours = compute_surface_distances(pred, target, list(range(10)), (3.87, 11.3))
    np.testing.assert_allclose(ours, _monai(pred, target, 10, (3.87, 11.3)), rtol=1e-5, atol=1e-4)


def test_two_blobs_count_both_components() -> None:
    target = np.zeros((40, 40), dtype=np.int64)
    target[2:6, 2:6] = 1
    target[30:34, 30:34] = 1
    pred = np.zeros_like(target)
    pred[2:6, 2:6] = 1  # misses the second blob
    hd = compute_surface_distances(pred, target, [1], (1.0, 1.0))[0, 0]
    # farthest reference boundary pixel (33, 33) to the nearest predicted boundary pixel (5, 5)
    assert hd == pytest.approx(math.hypot(28, 28))


def test_band_shift_is_axial_spacing_times_shift_with_border_excluded() -> None:
    target = layered_map().numpy()
    pred = layered_map(shift=3).numpy()
    # ONL occupies rows 27..35 (9 px): a 3 px shift moves both of its boundaries by 3 px
    ours = compute_surface_distances(pred, target, [5], (3.87, 11.3), exclude_border=True)
    np.testing.assert_allclose(ours[0], [3 * 3.87] * 3)
    # with the MONAI convention the band's ends at the image border are boundaries too: the
    # border pixels the two bands share pull the mean down, HD is unchanged
    monai_style = compute_surface_distances(pred, target, [5], (3.87, 11.3))
    assert monai_style[0, 0] == pytest.approx(3 * 3.87)
    assert monai_style[0, 2] < 3 * 3.87


def test_border_excluded_boundaries() -> None:
    band = layered_map(height=20, width=8, bounds=(5, 10, 15, 18, 19, 19, 19, 19)).numpy()
    edges = label_boundaries(band, exclude_border=True)
    assert not edges[:, 0][6:9].any()  # inside band 1, left border: not a boundary
    assert label_boundaries(band)[:, 0].all()


def test_empty_cases() -> None:
    empty = np.zeros((10, 10), dtype=np.int64)
    one = empty.copy()
    one[3:6, 3:6] = 1
    out = compute_surface_distances(empty, empty, [1], (1.0, 1.0))
    assert np.isnan(out).all()
    assert np.isinf(compute_surface_distances(one, empty, [1], (1.0, 1.0))).all()
    assert np.isinf(compute_surface_distances(empty, one, [1], (1.0, 1.0))).all()
    zero = compute_surface_distances(empty, empty, [1], (1.0, 1.0), both_empty_value=0.0)
    assert (zero == 0).all()


def test_suite_counts_failures_and_never_drops_them_silently() -> None:
    target = torch.stack([layered_map(), layered_map()])
    pred = target.clone()
    target[0, 30:34, 5:12] = 9  # fluid missed in scan 0
    suite = make_suite(["distance"])
    suite.update(pred, target)
    out = suite.compute()
    assert out["distance_failures/fluid"].item() == 1
    assert out["distance_failures"].item() == 1
    assert math.isnan(out["hd95_um/fluid"].item())  # no usable scan: NaN plus a failure count
    penal = make_suite(
        ["distance"], anatomy=None, options={"distance": {"failure_value_um": 500.0}}
    )
    penal.update(pred, target)
    assert penal.compute()["hd95_um/fluid"].item() == 500.0


def test_lateral_shift_uses_lateral_spacing() -> None:
    target = np.zeros((20, 30), dtype=np.int64)
    target[5:15, 5:12] = 1
    pred = np.roll(target, 2, axis=1)
    out = compute_surface_distances(pred, target, [1], (3.87, 11.3))
    assert out[0, 0] == pytest.approx(2 * 11.3)


def test_each_scan_uses_its_own_lateral_spacing() -> None:
    """A square shifted one column: HD is one lateral pixel, per scan."""
    target = torch.zeros(2, 20, 20, dtype=torch.long)
    target[:, 5:15, 5:15] = 1
    pred = torch.zeros_like(target)
    pred[:, 5:15, 6:16] = 1
    spacing = torch.tensor([[3.87, 11.3], [3.87, 6.0]])
    suite = make_suite(["distance"])
    suite.update(pred, target, torch.tensor([0, 1]), spacing_um=spacing)
    hd = suite.per_scan()["distance"]["hd_um"][:, 1]
    assert hd.tolist() == pytest.approx([11.3, 6.0])
    for b, (axial, lateral) in enumerate(spacing.tolist()):
        ref = compute_surface_distances(pred[b].numpy(), target[b].numpy(), [1], (axial, lateral))[
            0
        ]
        got = [
            suite.per_scan()["distance"][m][b, 1].item() for m in ("hd_um", "hd95_um", "assd_um")
        ]
        assert got == pytest.approx(ref.tolist())
    out = suite.compute()
    assert out["hd_um/RNFL"].item() == pytest.approx((11.3 + 6.0) / 2)
    assert out["volume/hd_um/RNFL"].item() == pytest.approx((11.3 + 6.0) / 2)
