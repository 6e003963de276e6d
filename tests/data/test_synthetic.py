"""Tests of the synthetic B-scan generator and SyntheticDataModule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from octseg.data.synthetic import (
    FLUID_LABEL,
    SyntheticDataModule,
    SyntheticStyle,
    generate_bscan,
    generate_bscan_with_info,
    measure_throughput,
)

SIZES = [(496, 512), (496, 523), (128, 160), (128, 128), (64, 48), (48, 8)]


def _layer_of_each_pixel(surfaces: np.ndarray, height: int) -> np.ndarray:
    """Label 0..8 of every pixel from the surfaces alone (fluid counted in its layer)."""
    return (np.arange(height)[:, None, None] >= surfaces[None]).sum(1)


def _without_fluid(labels: np.ndarray) -> np.ndarray:
    """Replaces each fluid pixel by the nearest non-fluid label above it in its column."""
    out = labels.astype(np.int64).copy()
    for row in range(1, out.shape[0]):
        fluid = out[row] == FLUID_LABEL
        out[row, fluid] = out[row - 1, fluid]
    return out


def test_deterministic_per_seed_and_index() -> None:
    a_img, a_lab = generate_bscan(3, 7, 128, 160)
    b_img, b_lab = generate_bscan(3, 7, 128, 160)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)


def test_different_seeds_and_indices_differ() -> None:
    base_img, base_lab = generate_bscan(0, 0, 128, 160)
    for seed, index in [(1, 0), (0, 1)]:
        img, lab = generate_bscan(seed, index, 128, 160)
        assert not np.array_equal(img, base_img)
        assert not np.array_equal(lab, base_lab)


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_shapes_dtypes_and_label_set(height: int, width: int) -> None:
    for index in range(3):
        image, labels = generate_bscan(0, index, height, width, fluid_probability=1.0)
        assert image.shape == labels.shape == (height, width)
        assert image.dtype == np.uint8 and labels.dtype == np.uint8
        assert labels.max() <= 9
        assert image.std() > 5  # real contrast, not a constant image


@pytest.mark.parametrize(("height", "width"), [(496, 512), (128, 160), (48, 8)])
def test_columns_are_ordered_and_every_layer_present(height: int, width: int) -> None:
    for seed in range(3):
        for index in range(12):
            scan = generate_bscan_with_info(seed, index, height, width, fluid_probability=0.8)
            labels = _without_fluid(scan.labels)
            assert (np.diff(labels, axis=0) >= 0).all(), (seed, index)  # non-decreasing down
            for label in range(9):  # at least one tissue pixel of every label in every column
                assert ((scan.labels == label).sum(0) >= 1).all(), (seed, index, label)
            # The surfaces describe the label map exactly, fluid aside.
            layers = _layer_of_each_pixel(scan.surfaces, height)
            tissue = scan.labels != FLUID_LABEL
            np.testing.assert_array_equal(layers[tissue], scan.labels[tissue])
            # Fluid sits inside the retina (between ILM and BM), never in vitreous or choroid.
            assert set(np.unique(layers[~tissue])) <= set(range(1, 8))


def test_healthy_never_has_fluid() -> None:
    for index in range(30):
        scan = generate_bscan_with_info(0, index, 128, 160, fluid_probability=1.0, healthy=True)
        assert not scan.has_fluid
        assert not (scan.labels == FLUID_LABEL).any()


def test_fluid_probability_controls_fluid() -> None:
    with_fluid = [generate_bscan_with_info(1, i, 128, 160, 1.0).has_fluid for i in range(20)]
    without = [generate_bscan_with_info(1, i, 128, 160, 0.0).has_fluid for i in range(20)]
    assert all(with_fluid) and not any(without)
    half = np.mean([generate_bscan_with_info(1, i, 128, 160, 0.5).has_fluid for i in range(200)])
    assert 0.38 < half < 0.62


def test_fluid_displaces_layers() -> None:
    for index in range(8):
        swollen = generate_bscan_with_info(2, index, 248, 256, fluid_probability=1.0)
        normal = generate_bscan_with_info(2, index, 248, 256, fluid_probability=0.0)
        extra = (swollen.surfaces[7] - swollen.surfaces[0]) - (
            normal.surfaces[7] - normal.surfaces[0]
        )
        fluid_per_column = (swollen.labels == FLUID_LABEL).sum(0)
        # Every fluid pixel was added to the retina (tissue kept), none painted over it.
        assert (extra >= fluid_per_column).all()
        assert (extra[fluid_per_column > 0] > 0).all()
        # Each layer keeps at least its tissue; the host layers gain the swelling.
        tissue_swollen = np.stack([(swollen.labels == k).sum(0) for k in range(1, 8)])
        tissue_normal = np.stack([(normal.labels == k).sum(0) for k in range(1, 8)])
        assert (tissue_swollen >= tissue_normal).all()
        assert tissue_swollen.sum() > tissue_normal.sum() or fluid_per_column.sum() == 0


def test_foveal_pit_thins_inner_layers_and_thickens_onl() -> None:
    style = SyntheticStyle(pit_probability=1.0)
    for index in range(5):
        scan = generate_bscan_with_info(5, index, 496, 512, healthy=True, style=style)
        thickness = np.diff(scan.surfaces, axis=0)  # [7, W] rows of layers 1..7
        inner = thickness[:3].sum(0)  # RNFL + GCL+IPL + INL
        pit = int(np.argmin(inner))
        assert inner[pit] < 0.35 * inner.max()
        assert thickness[4, pit] > np.median(thickness[4])  # ONL thicker at the pit
        retina = scan.surfaces[7] - scan.surfaces[0]
        assert retina[pit] < np.percentile(retina, 75)  # a dip in total thickness


def test_intensity_ordering() -> None:
    means = np.zeros((20, 10))
    for index in range(20):
        image, labels = generate_bscan(0, index, 248, 256, fluid_probability=1.0)
        for label in range(10):
            means[index, label] = (
                image[labels == label].mean() if (labels == label).any() else np.nan
            )
    rnfl, gcl, inl, opl, onl, ise, rpe, fluid = (
        np.nanmean(means[:, k]) for k in (1, 2, 3, 4, 5, 6, 7, 9)
    )
    vitreous = np.nanmean(means[:, 0])
    assert min(rnfl, rpe, ise) > max(inl, onl) + 30
    assert opl > onl and gcl > inl
    assert max(vitreous, fluid) < onl


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="height"):
        generate_bscan(0, 0, 20, 64)
    with pytest.raises(ValueError, match="fluid_probability"):
        generate_bscan(0, 0, 64, 64, fluid_probability=1.5)
    with pytest.raises(ValueError, match="seed"):
        generate_bscan(-1, 0, 64, 64)
    with pytest.raises(ValueError, match="scans_per_volume"):
        SyntheticDataModule(num_train=2, scans_per_volume=0)
    with pytest.raises(ValueError, match="style"):
        SyntheticDataModule(num_train=2, style={"speckles": 0.3})


def test_style_changes_appearance_only() -> None:
    plain = generate_bscan_with_info(
        0, 1, 128, 160, style=SyntheticStyle(speckle=0.0, noise_std=0.0)
    )
    noisy = generate_bscan_with_info(0, 1, 128, 160)
    np.testing.assert_array_equal(plain.labels, noisy.labels)

    def roughness(image: np.ndarray) -> float:  # mean lateral pixel-to-pixel change
        return float(np.abs(np.diff(image.astype(np.float64), axis=1)).mean())

    assert roughness(noisy.image) > 3 * roughness(plain.image)
    dm = SyntheticDataModule(1, 0, 0, 128, 160, seed=0, style={"speckle": 0.0, "noise_std": 0.0})
    dm.setup()
    np.testing.assert_array_equal(
        dm.datasets["train"].images[0],
        generate_bscan(0, 0, 128, 160, style=SyntheticStyle(speckle=0.0, noise_std=0.0))[0],
    )


def test_measure_throughput_returns_positive_rate() -> None:
    import cv2

    threads = cv2.getNumThreads()
    assert measure_throughput(n=3, height=64, width=64) > 0
    assert cv2.getNumThreads() == threads  # restored after timing on one thread


def test_datamodule_splits_and_batches() -> None:
    dm = SyntheticDataModule(
        num_train=6, num_val=3, num_test=5, height=64, width=80, seed=4, scans_per_volume=2,
        batch_size=2, eval_batch_size=3,
    )  # fmt: skip
    dm.setup("fit")
    sets = dm.datasets
    assert [len(sets[s]) for s in ("train", "val", "test")] == [6, 3, 5]
    case_ids = {s: set(sets[s].case_ids) for s in sets}
    volumes = {s: set(sets[s].volume_ids) for s in sets}
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not case_ids[a] & case_ids[b]
        assert not volumes[a] & volumes[b]
    assert volumes["train"] == {"synth_v000", "synth_v001", "synth_v002"}
    # Scan n of the module is scan n of the generator (val follows train, test follows val).
    image, labels = generate_bscan(4, 7, 64, 80)
    np.testing.assert_array_equal(sets["val"].masks[1], labels)

    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 64, 80) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (2, 64, 80) and batch["mask"].dtype == torch.int64
    assert batch["volume_index"].dtype == torch.int64 and batch["volume_index"].shape == (2,)
    assert batch["orig_hw"].tolist() == [[64, 80], [64, 80]]
    assert all(cid.startswith("synth_") for cid in batch["case_id"])
    assert all(vid.startswith("synth_v") for vid in batch["volume_id"])
    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch["image"].shape[0] == 3
    expected = (torch.from_numpy(image).float() / 255 - dm.mean) / dm.std
    val_sample = sets["val"][1]
    torch.testing.assert_close(val_sample["image"][0], expected)


def test_datamodule_applies_transform_to_train_only() -> None:
    calls: list[tuple[int, ...]] = []

    def flip(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(image.shape)
        return {"image": image[:, ::-1], "mask": mask[:, ::-1]}

    dm = SyntheticDataModule(num_train=2, num_val=2, num_test=1, height=64, width=64,
                             train_transform=flip)  # fmt: skip
    dm.setup()
    flipped = dm.datasets["train"][0]["mask"].numpy()
    np.testing.assert_array_equal(flipped, dm.datasets["train"].masks[0][:, ::-1])
    n_calls = len(calls)
    dm.datasets["val"][0]
    dm.datasets["test"][0]
    assert len(calls) == n_calls
