"""Augmentation pipelines: image and mask stay aligned, labels stay labels, runs reproduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from scipy.ndimage import maximum_filter, minimum_filter

from octseg.data.duke import DukeDataModule
from octseg.data.transforms import TorchSeededTransform, build_augmentation

IGNORE = 255
GEOMETRIC = {"hflip_p": 0.5, "vflip_p": 0.5, "affine_p": 1.0, "rotate": 10, "elastic_p": 0.5}


def layered_scan(height: int = 96, width: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Wavy layers 0..8 plus a fluid blob (9); intensity = 20 * label + 15, so every pixel's
    label can be read back from its intensity."""
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    surface = 12 + 3 * np.sin(cols / 9.0)
    mask = np.clip((rows - surface) // 8, 0, 8).astype(np.uint8)
    mask[(rows - 50) ** 2 + (cols - 30) ** 2 < 36] = 9
    return (20 * mask + 15).astype(np.uint8), mask


@pytest.mark.parametrize("crop_size", [None, [64, 48], [128, 100]])
def test_geometric_transforms_keep_image_and_mask_aligned(crop_size: list[int] | None) -> None:
    image, mask = layered_scan()
    pipeline = build_augmentation(**GEOMETRIC, crop_size=crop_size, seed=3, ignore_index=IGNORE)
    for _ in range(20):
        out = pipeline(image=image, mask=mask)
        img, msk = out["image"].astype(int), out["mask"]
        if crop_size is not None:
            assert msk.shape == tuple(crop_size) and img.shape[:2] == tuple(crop_size)
        assert set(np.unique(msk).tolist()) <= {*range(10), IGNORE}  # nearest: no new labels
        # Where a pixel's 5x5 neighbourhood carries one label (the frame outside the output
        # counts as unlabelled: linear interpolation blends in the zero fill there), the
        # interpolated intensity must be that label's intensity.
        framed = {"mode": "constant", "cval": IGNORE}
        uniform = (maximum_filter(msk, 5, **framed) == minimum_filter(msk, 5, **framed)) & (
            msk != IGNORE
        )
        assert uniform.sum() > 0.3 * (msk != IGNORE).sum()
        np.testing.assert_allclose(img[uniform], 20 * msk[uniform].astype(int) + 15, atol=2)


def test_padding_uses_ignore_index_and_zero_image() -> None:
    image, mask = layered_scan(40, 30)
    out = build_augmentation(hflip_p=0, crop_size=[64, 50], ignore_index=IGNORE)(
        image=image, mask=mask
    )
    padded = out["mask"] == IGNORE
    assert padded.sum() == 64 * 50 - 40 * 30 and np.all(out["image"][padded] == 0)


def test_intensity_transforms_keep_label_order() -> None:
    image, mask = layered_scan()
    pipeline = build_augmentation(
        brightness=0.2, contrast=0.2, brightness_contrast_p=1, gamma=[70, 130], gamma_p=1,
        speckle=[0.8, 1.2], speckle_p=1, seed=0,
    )  # fmt: skip
    out = pipeline(image=image, mask=mask)
    np.testing.assert_array_equal(out["mask"], mask)  # intensity-only: the mask is untouched
    medians = [np.median(out["image"][mask == k]) for k in range(10)]
    assert np.all(np.diff(medians) > 0)  # monotone intensity maps keep the label order


def test_crops_on_labels_always_hold_a_revealed_pixel() -> None:
    # Sparse labels as active learning reveals them: one 6 x 6 patch in a 96 x 200 scan.
    image, mask = layered_scan(96, 200)
    sparse = np.full_like(mask, IGNORE)
    sparse[60:66, 170:176] = mask[60:66, 170:176]
    on_labels = build_augmentation(hflip_p=0, crop_size=[96, 32], crop_on_labels=True,
                                   ignore_index=IGNORE, seed=0)  # fmt: skip
    anywhere = build_augmentation(hflip_p=0, crop_size=[96, 32], ignore_index=IGNORE, seed=0)
    hits = [(on_labels(image=image, mask=sparse)["mask"] != IGNORE).any() for _ in range(20)]
    assert all(hits)
    misses = [(anywhere(image=image, mask=sparse)["mask"] == IGNORE).all() for _ in range(20)]
    assert sum(misses) > 10  # random crops mostly miss the patch (chance of a hit ~ 37/169)
    out = on_labels(image=image, mask=sparse)  # image and mask cropped together
    kept = out["mask"] != IGNORE
    np.testing.assert_array_equal(out["image"][kept], 20 * out["mask"][kept] + 15)
    small = on_labels(image=image[:40, :20], mask=sparse[:40, :20])  # padded first
    assert small["mask"].shape == (96, 32)


def test_bad_crop_size() -> None:
    with pytest.raises(ValueError, match="crop_size"):
        build_augmentation(crop_size=[64])
    with pytest.raises(ValueError, match="crop_on_labels=true needs augmentation.crop_size"):
        build_augmentation(crop_on_labels=True)


def test_torch_seeded_transform_follows_the_global_seed() -> None:
    image, mask = layered_scan()

    def draws(seed: int) -> list[np.ndarray]:
        torch.manual_seed(seed)
        wrapped = TorchSeededTransform(build_augmentation(**GEOMETRIC, crop_size=[32, 32]))
        return [wrapped(image=image, mask=mask)["mask"] for _ in range(4)]

    first, again, other = draws(1), draws(1), draws(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=False))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=False))


def _export(folder: Path) -> Path:
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    image, mask = layered_scan()
    for s in range(1, 11):
        name = f"Subject_{s:02d}_00"
        Image.fromarray(image).save(folder / "images" / f"{name}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{name}.png")
    return folder


@pytest.mark.parametrize("num_workers", [0, 2])
def test_datamodule_batches_reproduce_with_workers(tmp_path: Path, num_workers: int) -> None:
    folder = _export(tmp_path / "duke_dme")

    def first_epoch(seed: int) -> torch.Tensor:
        pl.seed_everything(seed, workers=True)
        dm = DukeDataModule(
            folder,
            batch_size=2,
            num_workers=num_workers,
            train_transform=build_augmentation(**GEOMETRIC, crop_size=[48, 48]),
        )
        return torch.cat([b["mask"] for b in dm.train_dataloader()])

    a, b, c = first_epoch(5), first_epoch(5), first_epoch(6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The six training scans are identical, so distinct crops show the workers differ.
    assert len({tuple(m.flatten().tolist()) for m in a}) > 1
