"""MetricSuite: keys, overlap against MONAI, boundary shifts, aggregation and empty updates."""

from __future__ import annotations

import math

import pytest
import torch
from monai.metrics import compute_dice

from octseg.metrics.suite import MetricSuite
from tests.metrics.metric_cases import CLASS_NAMES, NUM_CLASSES, layered_map, make_suite


def _suite(families=("overlap", "boundary"), **kwargs) -> MetricSuite:
    return make_suite(families, **kwargs)


def test_keys_are_flat_scalars() -> None:
    suite = _suite()
    target = layered_map()[None]
    suite.update(target.clone(), target)
    out = suite.compute()
    for key in [
        "dice",
        "dice/RNFL",
        "iou/fluid",
        "volume/dice",
        "mad_um",
        "mad_um/ILM",
        "bias_um/BM",
        "rmse_um",
        "max_um",
        "volume/mad_um",
        "pixel_accuracy",
    ]:
        assert key in out, key
    assert all(v.ndim == 0 for v in out.values())
    assert out["dice"].item() == pytest.approx(1.0)
    assert math.isnan(out["dice/fluid"].item())  # absent from both: NaN, excluded from mean
    assert out["mad_um"].item() == 0.0


def test_dice_matches_monai_on_random_maps() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, NUM_CLASSES, (3, 24, 20), generator=gen)
    logits = torch.randn(3, NUM_CLASSES, 24, 20, generator=gen)
    suite = _suite(families=["overlap"])
    suite.update(logits, target)
    out = suite.compute()
    pred = logits.argmax(1)

    def onehot(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x, NUM_CLASSES).permute(0, 3, 1, 2)

    ref = compute_dice(onehot(pred), onehot(target), include_background=True)  # [B, K]
    for c, name in enumerate(CLASS_NAMES):
        assert out[f"dice/{name}"].item() == pytest.approx(ref[:, c].nanmean().item(), abs=1e-6)


@pytest.mark.parametrize("shift", [1, 3, -2])
def test_band_shift_gives_n_times_axial_spacing(shift: int) -> None:
    target = layered_map()[None]
    pred = layered_map(shift=shift)[None]
    suite = _suite()
    suite.update(pred, target)
    out = suite.compute()
    assert out["mad_um"].item() == pytest.approx(abs(shift) * 3.87, rel=1e-6)
    assert out["bias_um/ILM"].item() == pytest.approx(shift * 3.87, rel=1e-6)
    assert out["max_um/BM"].item() == pytest.approx(abs(shift) * 3.87, rel=1e-6)


def test_ignored_columns_do_not_count_and_fluid_does_not_break_surfaces() -> None:
    target = layered_map()
    target[:, 28:] = 255  # unannotated columns
    target[30:34, 5:12] = 9  # fluid inside ONL (rows 27..36)
    pred = layered_map(shift=2)
    pred[:, 28:] = 0  # garbage where the reference is undefined
    suite = _suite()
    suite.update(pred[None], target[None])
    out = suite.compute()
    assert out["mad_um"].item() == pytest.approx(2 * 3.87, rel=1e-6)


def test_volume_pools_counts_not_slice_scores() -> None:
    big = layered_map()
    small = torch.zeros_like(big)
    small[0:4, 0:4] = 9
    pred_small = torch.zeros_like(big)
    pred_small[0:2, 0:4] = 9
    suite = _suite(families=["overlap"])
    suite.update(torch.stack([big, pred_small]), torch.stack([big, small]), torch.tensor([0, 0]))
    out = suite.compute()
    # fluid: slice 1 has Dice 2*8/(16+8); pooled over the volume the same (slice 0 has no fluid)
    assert out["volume/dice/fluid"].item() == pytest.approx(16 / 24)
    # vitreous (0) pooled over both slices differs from the mean of slice scores
    tp = (big == 0).sum() + (pred_small == 0).logical_and(small == 0).sum()
    fp = ((pred_small == 0) & (small != 0)).sum()
    fn = ((pred_small != 0) & (small == 0)).sum()
    assert out["volume/dice/vitreous"].item() == pytest.approx(
        (2 * tp / (2 * tp + fp + fn)).item()
    )


def test_batch_equals_per_image_updates() -> None:
    target = torch.stack([layered_map(shift=s) for s in (0, 1, 2)])
    pred = torch.stack([layered_map(shift=s) for s in (1, 1, -1)])
    pred[1, 20:30, 3:9] = 9
    vol = torch.tensor([0, 1, 1])
    batched, single = _suite(), _suite()
    batched.update(pred, target, vol)
    for i in range(3):
        single.update(pred[i : i + 1], target[i : i + 1], vol[i : i + 1])
    a, b = batched.compute(), single.compute()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], equal_nan=True)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_compute_without_update_gives_nan() -> None:
    out = _suite().compute()
    assert math.isnan(out["dice"].item()) and math.isnan(out["mad_um"].item())


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="Unknown metric families"):
        _suite(families=["overlap", "nope"])
    suite = _suite()
    with pytest.raises(ValueError, match="num_classes"):
        suite.update(torch.full((1, 4, 4), 12), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="same"):
        suite.update(
            torch.zeros(1, 4, 5, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="anatomy.ordered_labels"):
        MetricSuite(families=["boundary"], num_classes=3, anatomy={}, strict=True)
    # By default a family the dataset's anatomy cannot support is skipped, the rest computed.
    lenient = MetricSuite(families=["overlap", "boundary", "fluid"], num_classes=3, anatomy={})
    assert lenient.family_names == ["overlap"]
    # Unknown spacing: the families in micrometres are skipped (or refused with strict=True).
    anatomy = {"ordered_labels": [0, 1, 2]}
    unitless = MetricSuite(families=["overlap", "boundary", "topology"], num_classes=3,
                           anatomy=anatomy, spacing_um=None)  # fmt: skip
    assert unitless.family_names == ["overlap", "topology"]
    with pytest.raises(ValueError, match="spacing_um is unknown"):
        MetricSuite(families=["boundary"], num_classes=3, anatomy=anatomy, spacing_um=None,
                    strict=True)  # fmt: skip


def test_empty_value_option_scores_absent_classes() -> None:
    target = layered_map()[None]
    suite = _suite(families=["overlap"], empty_value=1.0)
    suite.update(target.clone(), target)
    out = suite.compute()
    assert out["dice/fluid"].item() == 1.0  # absent from both: counted as perfect
    pred = target.clone()
    pred[0, 30:32, 0:4] = 9  # predicted but absent from the reference: 0, never NaN
    other = _suite(families=["overlap"])
    other.update(pred, target)
    assert other.compute()["dice/fluid"].item() == 0.0


def test_class_absent_from_one_volume_is_nan_there_only() -> None:
    with_fluid = layered_map()
    with_fluid[30:34, 5:10] = 9
    without = layered_map()
    suite = _suite(families=["overlap"])
    suite.update(
        torch.stack([with_fluid, without]),
        torch.stack([with_fluid, without]),
        torch.tensor([0, 1]),
    )
    out = suite.compute()
    assert out["volume/dice/fluid"].item() == 1.0  # volume 1 (no fluid) is NaN, left out
    assert out["dice/fluid"].item() == 1.0


def test_pooled_keys_sum_counts_over_all_volumes() -> None:
    """``pooled/`` scores come from confusion counts summed over every scan of every volume."""
    a, b = layered_map(), layered_map(shift=1)
    pa, pb = layered_map(shift=1), layered_map(shift=3)
    suite = _suite(families=["overlap"])
    suite.update(torch.stack([pa, pb]), torch.stack([a, b]), torch.tensor([0, 1]))
    out = suite.compute()
    preds, targets = torch.stack([pa, pb]), torch.stack([a, b])
    for label, name in ((1, "RNFL"), (5, "ONL")):
        tp = ((preds == label) & (targets == label)).sum()
        fp = ((preds == label) & (targets != label)).sum()
        fn = ((preds != label) & (targets == label)).sum()
        expected = (2 * tp / (2 * tp + fp + fn)).item()
        assert out[f"pooled/dice/{name}"].item() == pytest.approx(expected)
    # Two volumes of one scan each: pooled differs from the mean over volumes.
    assert out["pooled/dice"].item() != pytest.approx(out["volume/dice"].item(), rel=1e-9)


def test_bad_spacing_rows_raise_clear_errors() -> None:
    suite = _suite()
    target = layered_map()[None].expand(2, -1, -1)
    for rows in (torch.tensor([3.87, 11.3]), torch.ones(3, 2), torch.ones(2, 4)):
        with pytest.raises(ValueError, match=r"spacing_um must be \[B, 2\]"):
            suite.update(target, target, spacing_um=rows)
    for rows in ([[3.87, 0.0], [3.87, 11.3]], [[float("nan"), 11.3], [3.87, 11.3]]):
        with pytest.raises(ValueError, match="positive finite"):
            suite.update(target, target, spacing_um=torch.tensor(rows))
    for bscan in (-1.0, float("inf")):
        with pytest.raises(ValueError, match="B-scan distance"):
            suite.update(target, target, spacing_um=torch.tensor([[3.87, 11.3, bscan]] * 2))
    assert len(suite.volume_index) == 0  # nothing half-accumulated by a rejected batch
