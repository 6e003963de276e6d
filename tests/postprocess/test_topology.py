"""enforce_layer_order: ordered columns, fluid inside the retina, exact minimum change."""

from __future__ import annotations

import itertools

import pytest
import torch

from octseg.metrics.topology import order_violation_rate
from octseg.postprocess import enforce_layer_order
from tests.metrics.metric_cases import ANATOMY, layered_map

ORDERED = ANATOMY["ordered_labels"]  # 0 vitreous, 1-7 layers, 8 choroid
FLUID = ANATOMY["fluid_labels"]  # 9
LAYERS = ANATOMY["layer_labels"]
IGNORE = 255


def _order(labels: torch.Tensor, **kwargs) -> torch.Tensor:
    return enforce_layer_order(
        labels, ORDERED, FLUID, ignore_index=IGNORE, retina_labels=LAYERS, **kwargs
    )


def test_crossed_surfaces_are_uncrossed_with_the_fewest_changes() -> None:
    pred = layered_map()  # surfaces at rows 10, 14, 19, 23, 27, 36, 40, 45
    # Columns 5-14: INL (3) drawn above GCIPL (2), i.e. surfaces 2 and 3 crossed, and a
    # 3-row choroid island in the vitreous of columns 20-24.
    pred[14:19, 5:15], pred[19:23, 5:15] = 3, 2
    pred[2:5, 20:25] = 8
    assert order_violation_rate(pred, ORDERED) == pytest.approx(15 / 32)
    out = _order(pred)
    assert order_violation_rate(out, ORDERED) == 0.0
    changed = out != pred
    # Crossed columns: the shorter of the two swapped runs (4 rows of GCIPL) becomes INL.
    assert changed[:, 5:15].sum(0).tolist() == [4] * 10
    assert torch.equal(out[:, 20:25], layered_map()[:, 20:25])  # the island is vitreous again
    assert not changed[:, 15:20].any() and not changed[:, 25:].any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_label_maps_end_with_zero_violations_and_are_fixed_points(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (3, 40, 50), generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < 0.05] = IGNORE
    assert order_violation_rate(labels, ORDERED) > 0.9
    out = _order(labels)
    assert order_violation_rate(out, ORDERED) == 0.0
    assert torch.equal(_order(out), out)


def test_each_column_gets_its_minimum_change_ordering() -> None:
    # Brute force over every ordered labelling of short columns with three regions.
    ordered, layers, fluid = [0, 1, 2], [1], [5]
    gen = torch.Generator().manual_seed(3)
    cols = torch.tensor([0, 1, 2, 5, IGNORE])[torch.randint(0, 5, (200, 7), generator=gen)]
    out = enforce_layer_order(cols.T, ordered, fluid, IGNORE, retina_labels=layers).T
    ranks = [list(r) for r in itertools.product(range(3), repeat=7) if list(r) == sorted(r)]
    for col, res in zip(cols.tolist(), out.tolist(), strict=True):
        best = min(_cost(col, r, layers, fluid) for r in ranks)
        # Output regions: fluid kept only inside the retina, ignore kept; others are regions.
        assigned = [1 if (v in fluid) else v for v in res]
        assert all(v in fluid + [IGNORE] or v in ordered for v in res)
        assert [v for v in assigned if v != IGNORE] == sorted(v for v in assigned if v != IGNORE)
        assert _cost(col, [a if a != IGNORE else 0 for a in assigned], layers, fluid) == best


def _cost(col: list[int], regions: list[int], layers: list[int], fluid: list[int]) -> int:
    cost = 0
    for label, region in zip(col, regions, strict=True):
        if label == IGNORE:
            continue
        cost += (region not in layers) if label in fluid else (region != label)
    return cost


def test_two_regions() -> None:
    column = torch.tensor([1, 0, 0, 1, 1]).view(5, 1)  # best: one surface below row 2
    assert enforce_layer_order(column, [0, 1]).flatten().tolist() == [0, 0, 0, 1, 1]


def test_ordered_maps_with_fluid_inside_and_ignore_pixels_are_unchanged() -> None:
    clean = layered_map()
    clean[26:30, 3:9] = 9  # a fluid pocket straddling the OPL-ONL surface
    clean[10:13, 12:15] = 9  # fluid right under the ILM, touching the vitreous
    clean[40:45, 20:22] = 9  # fluid above the choroid
    clean[0:5, 25:28] = IGNORE  # unlabelled pixels
    clean[:, 30] = IGNORE  # an untraced column
    assert torch.equal(_order(clean), clean)


def test_fluid_inside_the_retina_stays_and_fluid_outside_takes_the_region_there() -> None:
    pred = layered_map()
    pred[30:34, 0:6] = 9  # inside ONL: kept
    pred[2:6, 10:16] = 9  # in the vitreous, far from the retina: vitreous
    pred[50:55, 20:26] = 9  # deep in the choroid: choroid
    out = _order(pred)
    assert (out[30:34, 0:6] == 9).all()
    assert (out[2:6, 10:16] == 0).all()
    assert (out[50:55, 20:26] == 8).all()
    assert torch.equal(out[out != 9], layered_map()[out != 9])


def test_batches_equal_single_maps_and_dtype_is_kept() -> None:
    gen = torch.Generator().manual_seed(4)
    batch = torch.randint(0, 10, (2, 30, 20), generator=gen).to(torch.uint8)
    out = _order(batch)
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    assert torch.equal(out[1], _order(batch[1]))
    assert torch.equal(out[0].long(), _order(batch[0].long()))


def test_columns_without_ordered_labels_are_left_alone() -> None:
    pred = layered_map()
    pred[:, 4] = IGNORE  # untraced (padding)
    pred[:, 7] = 9  # all fluid: no region to place it in
    pred[:20, 9] = IGNORE  # partly ignored: the rest is ordered, ignore pixels stay
    pred[50:53, 9] = 1  # an RNFL island in the choroid
    out = _order(pred)
    assert (out[:, 4] == IGNORE).all() and (out[:, 7] == 9).all()
    assert (out[:20, 9] == IGNORE).all()
    assert torch.equal(out[20:, 9], layered_map()[20:, 9])


def test_default_retina_is_every_region_between_the_first_and_the_last() -> None:
    pred = layered_map()
    pred[50:55, 0:3] = 9
    pred[30:34, 5:8] = 9
    out = enforce_layer_order(pred, ORDERED, FLUID, ignore_index=IGNORE)
    assert torch.equal(out, _order(pred))


def test_bad_inputs_are_refused_with_clear_errors() -> None:
    with pytest.raises(TypeError, match="integer torch.Tensor"):
        _order(layered_map().float())
    with pytest.raises(ValueError, match=r"\[H, W\] or a batch"):
        _order(layered_map()[None, None])
    bad = layered_map()
    bad[0, 0] = 12
    with pytest.raises(ValueError, match=r"labels \[12\] that are neither"):
        _order(bad)
    with pytest.raises(ValueError, match="at least two distinct"):
        enforce_layer_order(layered_map(), [0])
    with pytest.raises(ValueError, match="overlap"):
        enforce_layer_order(layered_map(), ORDERED, fluid_labels=[8])
    with pytest.raises(ValueError, match="retina_labels"):
        enforce_layer_order(layered_map(), ORDERED, retina_labels=[12])


def test_a_negative_ignore_index_works() -> None:
    pred = layered_map()
    pred[0:3, :5] = -100
    pred[40:44, 9] = 1
    out = enforce_layer_order(pred, ORDERED, FLUID, ignore_index=-100)
    assert (out[0:3, :5] == -100).all() and order_violation_rate(out.clamp_min(0), ORDERED) == 0
