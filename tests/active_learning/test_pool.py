"""The revealed-label dataset: unrevealed pixels read ignore_index (masked before augmentation),
only scans with labels are served, the pool is left untouched; mask packing round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import TensorDataset

from octseg.active_learning.pool import (
    RevealedLabelDataset,
    pack_masks,
    unpack_masks,
    unwrap_pool,
)
from octseg.data.base import InMemorySegDataset, RepeatedDataset


def _pool(transform=None) -> InMemorySegDataset:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (4, 5), dtype=np.uint8) for _ in range(3)]
    masks = [rng.integers(0, 4, (4, 5)).astype(np.uint8) for _ in range(3)]
    return InMemorySegDataset(images, masks, ["a", "b", "c"], ["v", "v", "w"], transform)


def _flip(image, mask=None):
    out = {"image": image[:, ::-1]}
    if mask is not None:
        out["mask"] = mask[:, ::-1]
    return out


def test_unrevealed_pixels_are_ignored_and_unlabelled_scans_skipped() -> None:
    pool = _pool(transform=_flip)
    oracle = [m.copy() for m in pool.masks]
    revealed = [np.zeros((4, 5), bool) for _ in range(3)]
    revealed[0][:2, 1:3] = True
    revealed[2][:] = True
    data = RevealedLabelDataset(pool, revealed, ignore_index=255)
    assert len(data) == 2 and data.indices == [0, 2] and data.transform is _flip
    first = data[0]["mask"].numpy()
    # Masked on the stored labels, then flipped with the image by the augmentation.
    np.testing.assert_array_equal(first, np.where(revealed[0], oracle[0], 255)[:, ::-1])
    np.testing.assert_array_equal(data[1]["mask"].numpy(), oracle[2][:, ::-1])
    assert data[1]["case_id"] == "c"
    for before, after in zip(oracle, pool.masks, strict=True):  # the oracle is untouched
        np.testing.assert_array_equal(before, after)
    revealed[1][3, 4] = True
    data.refresh()
    assert data.indices == [0, 1, 2]
    second = data[1]["mask"].numpy()[:, ::-1]
    assert second[3, 4] == oracle[1][3, 4] and (second == 255).sum() == 19


def test_repeats_and_unwrapping() -> None:
    pool = _pool()
    revealed = [np.ones((4, 5), bool), np.zeros((4, 5), bool), np.zeros((4, 5), bool)]
    data = RevealedLabelDataset(pool, revealed, 255, repeats=3)
    assert len(data) == 3 and data[2]["case_id"] == "a"
    assert unwrap_pool(RepeatedDataset(RepeatedDataset(pool, 2), 3)) == (pool, 6)
    assert unwrap_pool(data) == (pool, 3)
    with pytest.raises(TypeError, match="InMemorySegDataset"):
        unwrap_pool(TensorDataset())


def test_wrong_revealed_maps_are_refused() -> None:
    pool = _pool()
    with pytest.raises(ValueError, match="2 maps for a pool of 3"):
        RevealedLabelDataset(pool, [np.zeros((4, 5), bool)] * 2, 255)
    with pytest.raises(ValueError, match="'b'"):
        RevealedLabelDataset(pool, [np.zeros((4, 5), bool), np.zeros((5, 4), bool),
                                    np.zeros((4, 5), bool)], 255)  # fmt: skip


def test_packed_masks_round_trip() -> None:
    masks = {"Subject_01_03": np.eye(5, dtype=bool), "x": np.zeros((2, 7), bool)}
    back = unpack_masks(pack_masks(masks))
    assert back.keys() == masks.keys()
    for key in masks:
        np.testing.assert_array_equal(back[key], masks[key])


def test_a_fixed_epoch_length_cycles_over_the_labelled_scans() -> None:
    pool = _pool()
    revealed = [np.ones((4, 5), bool), np.zeros((4, 5), bool), np.zeros((4, 5), bool)]
    data = RevealedLabelDataset(pool, revealed, 255, repeats=3, samples_per_epoch=5)
    assert len(data) == 5 and [data[i]["case_id"] for i in range(5)] == ["a"] * 5
    revealed[2][0, 0] = True
    data.refresh()  # more labelled scans, same epoch length
    assert len(data) == 5 and [data[i]["case_id"] for i in range(4)] == ["a", "c", "a", "c"]
    revealed[0][:] = revealed[2][:] = False
    data.refresh()  # nothing labelled: an empty epoch, not a division by zero
    assert len(data) == 0
    with pytest.raises(ValueError, match="samples_per_epoch"):
        RevealedLabelDataset(pool, revealed, 255, samples_per_epoch=0)
