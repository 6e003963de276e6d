"""The generic data layer: sample and volume contracts, padding collate, DataModule wiring."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from octseg.data.base import (
    BScanRecord,
    InMemorySegDataset,
    PadCollate,
    RepeatedDataset,
    SegDataModule,
    apply_label_map,
    dataset_from_records,
)
from tests.conftest import requires_duke

IGNORE = 255


def ramp(height: int, width: int, start: int = 0) -> np.ndarray:
    """A uint8 image whose every pixel differs from its neighbours (padding is traceable)."""
    return ((np.arange(height * width).reshape(height, width) + start) % 251).astype(np.uint8)


def records(volume: str, n: int, width: int, spacing=None, labelled: bool = True, subject=None):
    return [
        BScanRecord(
            ramp(16, width, start=k), np.full((16, width), k % 3, np.uint8) if labelled else None,
            f"{volume}_{k:02d}", volume, bscan_index=k, spacing_um=spacing, subject_id=subject,
        )  # fmt: skip
        for k in range(n)
    ]


class VolumesModule(SegDataModule):
    """A reader-based DataModule over hand-made volumes and a split file."""

    def __init__(self, volumes: list[list[BScanRecord]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.volumes = volumes

    def read_volumes(self) -> Iterator[Sequence[BScanRecord]]:
        yield from self.volumes


def split_file(tmp_path: Path, unit: str = "volume", **parts: list[str]) -> str:
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"protocol": "t", "unit": unit, "folds": [parts]}))
    return str(path)


def test_collate_pads_each_sample_by_reflection_without_zero_strips() -> None:
    narrow, wide = (dataset_from_records(records("v", 1, w))[0] for w in (10, 14))
    narrow["weight"] = torch.ones(16, 10)
    wide["weight"] = torch.ones(16, 14)
    batch = PadCollate(IGNORE)([narrow, wide])
    image = batch["image"][0, 0]
    assert batch["image"].shape == (2, 1, 16, 14)
    # The padded columns mirror the sample's own last columns (reflect, edge not repeated).
    torch.testing.assert_close(image[:, 10:], narrow["image"][0][:, [8, 7, 6, 5]])
    assert (batch["image"][:, :, :, -4:] != 0).all()  # no zero strip (the ramp has no 0 there)
    assert (batch["mask"][0, :, 10:] == IGNORE).all() and (batch["mask"][0, :, :10] == 0).all()
    assert (batch["weight"][0, :, 10:] == 0).all() and (batch["weight"][1] == 1).all()
    assert batch["orig_hw"].tolist() == [[16, 10], [16, 14]]
    assert batch["labelled"].tolist() == [True, True]


def test_collate_replicates_where_the_pad_exceeds_the_size() -> None:
    tiny = dataset_from_records(records("v", 1, 3))[0]
    wide = dataset_from_records(records("v", 1, 12))[0]
    image = PadCollate(IGNORE)([tiny, wide])["image"][0, 0]
    assert torch.equal(image[:, 3:], tiny["image"][0][:, 2:3].expand(16, 9))


def test_unlabelled_samples_in_a_batch() -> None:
    labelled = dataset_from_records(records("a", 1, 12))[0]
    unlabelled = dataset_from_records(records("b", 1, 10, labelled=False))[0]
    assert "mask" not in unlabelled
    mixed = PadCollate(IGNORE)([labelled, unlabelled])
    assert mixed["labelled"].tolist() == [True, False]
    assert (mixed["mask"][1] == IGNORE).all() and torch.equal(mixed["mask"][0], labelled["mask"])
    none = PadCollate(IGNORE)([unlabelled, unlabelled])
    assert "mask" not in none and none["labelled"].tolist() == [False, False]


def test_samples_with_different_keys_are_refused() -> None:
    a = dataset_from_records(records("a", 1, 12))[0]
    b = dict(dataset_from_records(records("b", 1, 12))[0], weight=torch.ones(16, 12))
    with pytest.raises(ValueError, match="different keys"):
        PadCollate(IGNORE)([a, b])


def test_unlabelled_samples_flow_through_a_datamodule(tmp_path: Path) -> None:
    volumes = [records("lab", 2, 12), records("unl", 2, 12, labelled=False)]
    dm = VolumesModule(volumes, batch_size=4, split=split_file(tmp_path, train=["lab", "unl"]))
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch["labelled"].tolist()) == [False, False, True, True]
    unlabelled_rows = batch["mask"][~batch["labelled"]]
    assert (unlabelled_rows == IGNORE).all() and (batch["mask"][batch["labelled"]] < 3).all()
    only = VolumesModule([volumes[1]], batch_size=2, split=split_file(tmp_path, train=["unl"]))
    assert all("mask" not in b for b in only.train_dataloader())


def test_per_volume_spacing_reaches_the_batch(tmp_path: Path) -> None:
    volumes = [records("spectralis", 2, 12, (3.87, 11.3, 120.0)),
               records("cirrus", 2, 12, (1.96, 11.7, math.nan))]  # fmt: skip
    dm = VolumesModule(volumes, eval_batch_size=4, split=split_file(tmp_path, test=["spectralis",
                       "cirrus"]))  # fmt: skip
    batch = next(iter(dm.test_dataloader()))
    assert batch["spacing_um"].dtype == torch.float32 and batch["spacing_um"].shape == (4, 3)
    by_volume = dict(zip(batch["volume_id"], batch["spacing_um"].tolist(), strict=False))
    assert by_volume["spectralis"] == pytest.approx([3.87, 11.3, 120.0])
    assert by_volume["cirrus"][:2] == pytest.approx([1.96, 11.7])
    assert math.isnan(by_volume["cirrus"][2])
    assert batch["bscan_index"].tolist() == [0, 1, 0, 1]


def test_datamodule_spacing_fills_records_without_their_own(tmp_path: Path) -> None:
    volumes = [records("a", 1, 12), records("b", 1, 12, (2.0, 5.0, 50.0))]
    dm = VolumesModule(volumes, spacing_um=[3.87, 11.3], bscan_spacing_um=123,
                       split=split_file(tmp_path, test=["a", "b"]))  # fmt: skip
    dm.setup()
    assert dm.datasets["test"][0]["spacing_um"].tolist() == pytest.approx([3.87, 11.3, 123])
    assert dm.datasets["test"][1]["spacing_um"].tolist() == pytest.approx([2.0, 5.0, 50.0])
    mixed = VolumesModule(volumes, split=split_file(tmp_path, test=["a", "b"]))
    with pytest.raises(ValueError, match="no spacing while others do.*spacing_um"):
        mixed.setup()
    with pytest.raises(ValueError, match=r"dataset.spacing_um must be"):
        VolumesModule(volumes, spacing_um=[3.87])


def test_split_by_volume_and_subject(tmp_path: Path) -> None:
    volumes = [records("p1_od", 1, 12, subject="p1"), records("p1_os", 1, 12, subject="p1"),
               records("p2_od", 1, 12, subject="p2")]  # fmt: skip
    dm = VolumesModule(volumes, split=split_file(tmp_path, unit="subject", train=["p1"],
                       test=["p2"]))  # fmt: skip
    dm.setup()
    assert sorted(dm.datasets["train"].volume_ids) == ["p1_od", "p1_os"]
    assert dm.split_info["unit"] == "subject" and "val" not in dm.datasets
    assert dm.val_dataloader() == []
    leaky = VolumesModule(volumes, split=split_file(tmp_path, train=["p1_od"], test=["p1_os"]))
    with pytest.raises(ValueError, match="volumes of one subject in several parts.*p1"):
        leaky.setup()


@pytest.mark.parametrize("setting", ["batch_size", "eval_batch_size"])
@pytest.mark.parametrize("value", [0, -2])
def test_non_positive_batch_sizes_are_refused(setting: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"dataset.datamodule.{setting} must be a positive"):
        VolumesModule([], **{setting: value})


def test_eval_batch_size_none_means_batch_size() -> None:
    assert VolumesModule([], batch_size=3).eval_batch_size == 3
    assert VolumesModule([], batch_size=3, eval_batch_size=1).eval_batch_size == 1


def test_train_repeats_and_transform_wiring(tmp_path: Path) -> None:
    calls = []

    def mark(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(image.shape)
        return {"image": image, "mask": mask}

    dm = VolumesModule([records("a", 2, 12), records("b", 1, 12)], train_repeats=3,
                       train_transform=mark, split=split_file(tmp_path, train=["a"], test=["b"]))
    dm.setup()
    assert isinstance(dm.datasets["train"], RepeatedDataset) and len(dm.datasets["train"]) == 6
    dm.datasets["test"][0]
    assert calls == []
    dm.datasets["train"][5]
    assert calls == [(16, 12)]
    with pytest.raises(ValueError, match="train_repeats must be >= 1"):
        VolumesModule([], train_repeats=0)


def test_image_dtypes_are_scaled_to_unit_range() -> None:
    images = [np.full((4, 4), 255, np.uint8), np.full((4, 4), 65535, np.uint16),
              np.full((4, 4), 0.5, np.float32)]  # fmt: skip
    ds = InMemorySegDataset(images, None, ["a", "b", "c"], ["v"] * 3)
    assert [float(ds[i]["image"].max()) for i in range(3)] == [1.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="'x': image dtype int32"):
        InMemorySegDataset([np.zeros((4, 4), np.int32)], None, ["x"], ["v"])
    with pytest.raises(ValueError, match=r"Case ids \['a_00'\] occur more than once"):
        dataset_from_records(records("a", 1, 4) + records("a", 1, 4))


def test_release_part_splits_need_a_dataset_that_knows_release_parts(tmp_path: Path) -> None:
    path = tmp_path / "parts.json"
    path.write_text(json.dumps({"rule": "release_part", "folds": [{"train": ["train"]}]}))
    dm = VolumesModule([records("a", 1, 12)], split=str(path))
    with pytest.raises(ValueError, match="names release parts.*does not know the release part"):
        dm.setup()


# ---------------------------------------------------------------- label_map
def test_apply_label_map_keeps_ignore_and_dtype() -> None:
    mask = np.array([[0, 1, 2], [IGNORE, 2, 0]], np.uint8)
    out = apply_label_map(mask, np.array([0, 0, 1]), IGNORE)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 0, 1], [IGNORE, 1, 0]]
    with pytest.raises(ValueError, match=r"labels \[2\].*label_map"):
        apply_label_map(mask, np.array([0, 1]), IGNORE, case_id="s1")


def test_label_map_remaps_every_part_of_a_datamodule(tmp_path: Path) -> None:
    """A fluid-only view: labels 0 and 1 -> background, 2 -> fluid, ignore stays."""
    volumes = [records("a", 3, 12), records("b", 3, 12)]
    volumes[1][0].mask[:, :4] = IGNORE
    split = split_file(tmp_path, train=["a"], test=["b"])
    dm = VolumesModule(volumes, batch_size=3, eval_batch_size=3, split=split,
                       label_map=[0, 0, 1])  # fmt: skip
    for loader in (dm.train_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        by_case = dict(zip(batch["case_id"], batch["mask"], strict=True))
        for case, mask in by_case.items():
            k = int(case[-2:])  # records() labels scan k with k % 3
            assert set(mask[mask != IGNORE].unique().tolist()) == {1 if k % 3 == 2 else 0}
    test = next(iter(dm.test_dataloader()))
    assert (test["mask"][test["case_id"].index("b_00"), :, :4] == IGNORE).all()
    # The stored records are not touched: a second DataModule sees the original labels.
    plain = VolumesModule(volumes, eval_batch_size=3, split=split)
    assert 2 in next(iter(plain.test_dataloader()))["mask"].unique().tolist()


@pytest.mark.parametrize("label_map", [[], [0, -1], [0, 1.5], [True, 0]])
def test_malformed_label_maps_are_refused(label_map: list) -> None:
    with pytest.raises(ValueError, match="dataset.datamodule.label_map"):
        SegDataModule(label_map=label_map)


def test_duke_fluid_config_is_a_two_class_view_of_duke(make_cfg) -> None:
    cfg = make_cfg("dataset=duke_fluid", "paths.data_dir=/nonexistent", fast=False)
    assert cfg.dataset.num_classes == 2 == len(cfg.dataset.class_names)
    assert list(cfg.dataset.datamodule.label_map) == [0] * 9 + [1]
    assert cfg.dataset.datamodule._target_ == "octseg.data.duke.DukeDataModule"
    assert list(cfg.dataset.anatomy.layer_labels) == [] and list(
        cfg.dataset.anatomy.fluid_labels
    ) == [1]


@requires_duke()
def test_duke_fluid_reads_fluid_vs_rest(make_cfg) -> None:
    cfg = make_cfg("dataset=duke_fluid", "paths.data_dir=../shared/datasets", fast=False)
    fluid = hydra.utils.instantiate(cfg.dataset.datamodule, train_transform=None)
    duke = hydra.utils.instantiate(cfg.dataset.datamodule, train_transform=None, label_map=None)
    fluid_pixels = 0
    for a, b in zip(fluid.test_dataloader(), duke.test_dataloader(), strict=True):
        assert a["case_id"] == b["case_id"]
        expected = torch.where(b["mask"] == IGNORE, IGNORE, (b["mask"] == 9).long())
        assert torch.equal(a["mask"], expected)
        fluid_pixels += int((a["mask"] == 1).sum())
    assert fluid_pixels > 0
