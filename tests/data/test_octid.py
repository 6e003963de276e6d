"""OCTID: class folders (with name variants), one volume per image in the test part, class
selection, reruns, partial releases and bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from octseg.data.image_sets import ImageLevelDataModule
from octseg.data.octid import CLASSES, prepare_octid
from octseg.data.prepared import read_prepared
from tests.conftest import REPO_ROOT
from tests.data.image_level_fixtures import write_release

FILES = [
    "OCTID/NORMAL/NORMAL1.jpeg",
    "OCTID/NORMAL/NORMAL2.jpeg",
    "OCTID/MH/MH1.jpeg",
    "OCTID/ARMD/AMRD1.jpeg",
    "OCTID/CSR/CSR1.jpeg",
    "OCTID/Diabetic_Retinopathy/DR1.jpeg",
]


def test_prepare_maps_folder_variants_and_serves_the_test_part(tmp_path: Path) -> None:
    summary = prepare_octid(write_release(tmp_path / "rel", FILES), tmp_path / "out")
    assert (summary.volumes, summary.labelled_bscans, summary.missing) == (6, 0, [])
    ids = sorted(v[0].volume_id for v in read_prepared(tmp_path / "out", "octid"))
    assert ids == ["AMD_AMRD1", "CSR_CSR1", "DR_DR1", "MH_MH1", "NORMAL_NORMAL1",
                   "NORMAL_NORMAL2"]  # fmt: skip
    dm = ImageLevelDataModule(tmp_path / "out", "octid", CLASSES, classes=["NORMAL"],
                              split="test", split_dir=str(REPO_ROOT / "splits/octid"))  # fmt: skip
    batch = next(iter(dm.test_dataloader()))
    assert batch["case_id"] == ["NORMAL_NORMAL1", "NORMAL_NORMAL2"]
    assert batch["class_index"].tolist() == [0, 0] and "mask" not in batch
    assert set(dm.datasets) == {"test"}


def test_rerun_skips_and_partial_release_warns(tmp_path: Path, caplog) -> None:
    release = write_release(tmp_path / "rel", FILES[:3])
    with caplog.at_level(logging.WARNING):
        first = prepare_octid(release, tmp_path / "out")
    assert first.missing == ["test/AMD", "test/CSR", "test/DR"]
    assert "not in the release" in caplog.text
    assert prepare_octid(release, tmp_path / "out").skipped_volumes == 3


def test_bad_input(tmp_path: Path) -> None:
    release = write_release(tmp_path / "rel", FILES[:2])
    (release / FILES[1]).write_bytes(b"\xff\xd8\xff")
    with pytest.raises(ValueError, match="NORMAL2.jpeg could not be read"):
        prepare_octid(release, tmp_path / "a")
    (tmp_path / "empty" / "other").mkdir(parents=True)
    with pytest.raises(ValueError, match="No OCTID image found"):
        prepare_octid(tmp_path / "empty", tmp_path / "b")
