"""OCT-C8: release layout, one volume per image, the official train/val/test folders, class
selection, reruns, partial releases and bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from octseg.data.image_sets import ImageLevelDataModule
from octseg.data.oct_c8 import CLASSES, prepare_oct_c8
from octseg.data.prepared import read_prepared
from tests.conftest import REPO_ROOT
from tests.data.image_level_fixtures import write_release

FILES = [
    f"RetinalOCT_Dataset/{part}/{c}/{c.lower()}_{part}_{1000 + k}.jpg"
    for part in ("train", "val", "test")
    for c in CLASSES
    for k in range(2 if part == "train" else 1)
]


def test_prepare_splits_by_release_folder_and_selects_classes(tmp_path: Path) -> None:
    summary = prepare_oct_c8(write_release(tmp_path / "rel", FILES), tmp_path / "out")
    assert (summary.volumes, summary.bscans, summary.labelled_bscans) == (32, 32, 0)
    assert not summary.missing
    volumes = {v[0].volume_id: v for v in read_prepared(tmp_path / "out", "oct_c8")}
    assert volumes["amd_val_1000"][0].subject_id == "amd_val_1000"
    dm = ImageLevelDataModule(
        tmp_path / "out",
        "oct_c8",
        CLASSES,
        classes=["NORMAL", "MH"],
        split="official",
        split_dir=str(REPO_ROOT / "splits/oct_c8"),
    )
    dm.setup()
    assert [len(dm.datasets[p]) for p in ("train", "val", "test")] == [4, 2, 2]
    batch = next(iter(dm.val_dataloader()))
    assert "mask" not in batch and sorted(batch["class_index"].tolist()) == [6, 7]


def test_rerun_skips_and_partial_release_warns(tmp_path: Path, caplog) -> None:
    release = write_release(tmp_path / "rel", [f for f in FILES if "/test/" not in f])
    with caplog.at_level(logging.WARNING):
        first = prepare_oct_c8(release, tmp_path / "out")
    assert first.missing == [f"test/{c}" for c in CLASSES] and "not in the release" in caplog.text
    again = prepare_oct_c8(release, tmp_path / "out")
    assert again.skipped_volumes == again.volumes == 24


def test_bad_input(tmp_path: Path) -> None:
    release = write_release(tmp_path / "rel", FILES[:3])
    with pytest.raises(ValueError, match="one folder level too deep"):
        prepare_oct_c8(release / "RetinalOCT_Dataset" / "train", tmp_path / "a")
    (release / FILES[0]).write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="amd_train_1000.jpg could not be read"):
        prepare_oct_c8(release, tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_oct_c8(tmp_path / "nowhere", tmp_path / "c")
