"""Kermany 2018: release layout, patients as subjects, the official release-part split, class
selection, reruns, partial releases and bad input."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from octseg.data.image_sets import ImageLevelDataModule
from octseg.data.kermany import CLASSES, prepare_kermany
from octseg.data.prepared import read_prepared
from tests.conftest import REPO_ROOT
from tests.data.image_level_fixtures import write_jpeg, write_release

FILES = [
    "OCT2017/train/CNV/CNV-1001-1.jpeg", "OCT2017/train/CNV/CNV-1001-2.jpeg",
    "OCT2017/train/DME/DME-1002-1.jpeg", "OCT2017/train/DRUSEN/DRUSEN-1003-4.jpeg",
    "OCT2017/train/NORMAL/NORMAL-1004-1.jpeg", "OCT2017/train/NORMAL/NORMAL-1005-2.jpeg",
    "OCT2017/test/CNV/CNV-2001-1.jpeg", "OCT2017/test/DME/DME-2002-1.jpeg",
    "OCT2017/test/DRUSEN/DRUSEN-2003-1.jpeg", "OCT2017/test/NORMAL/NORMAL-2004-1.jpeg",
]  # fmt: skip


def _module(out: Path, **kwargs) -> ImageLevelDataModule:
    dm = ImageLevelDataModule(out, "kermany", CLASSES, split="official",
                              split_dir=str(REPO_ROOT / "splits" / "kermany"), batch_size=2,
                              **kwargs)  # fmt: skip
    dm.setup()
    return dm


def test_prepare_groups_by_patient_and_keeps_parts(tmp_path: Path) -> None:
    summary = prepare_kermany(write_release(tmp_path / "rel", FILES), tmp_path / "out")
    assert (summary.volumes, summary.bscans, summary.labelled_bscans) == (9, 10, 0)
    assert summary.subjects == 9 and not summary.missing
    volumes = {v[0].volume_id: v for v in read_prepared(tmp_path / "out", "kermany")}
    cnv = volumes["train-CNV-1001"]
    assert [r.case_id for r in cnv] == ["CNV-1001-1", "CNV-1001-2"]
    assert [r.bscan_index for r in cnv] == [1, 2] and cnv[0].subject_id == "1001"
    assert cnv[0].mask is None and cnv[0].image.dtype == np.uint8 and cnv[0].spacing_um is None
    meta = json.loads((tmp_path / "out/volumes/test-NORMAL-2004/volume.json").read_text())
    assert meta["meta"]["class"] == "NORMAL" and meta["meta"]["part"] == "test"


def test_official_split_and_class_selection(tmp_path: Path) -> None:
    prepare_kermany(write_release(tmp_path / "rel", FILES), tmp_path / "out")
    dm = _module(tmp_path / "out")
    assert (len(dm.datasets["train"]), len(dm.datasets["test"])) == (6, 4)
    assert "val" not in dm.datasets
    healthy = _module(tmp_path / "out", train_classes=["NORMAL"])
    assert len(healthy.datasets["train"]) == 2 and len(healthy.datasets["test"]) == 4
    batch = next(iter(healthy.train_dataloader()))
    assert "mask" not in batch and batch["class_index"].tolist() == [3, 3]
    normal = _module(tmp_path / "out", classes=["NORMAL"])
    test = next(iter(normal.test_dataloader()))
    assert test["case_id"] == ["NORMAL-2004-1"] and test["image"].shape[1] == 1
    with pytest.raises(ValueError, match="unknown classes"):
        _module(tmp_path / "out", classes=["HEALTHY"])


def test_patient_in_two_parts_is_refused(tmp_path: Path) -> None:
    files = [*FILES, "OCT2017/test/CNV/CNV-1001-7.jpeg"]
    prepare_kermany(write_release(tmp_path / "rel", files), tmp_path / "out")
    with pytest.raises(ValueError, match="several release parts"):
        _module(tmp_path / "out")


def test_rerun_skips_partial_release_warns_and_zip_reads(tmp_path: Path, caplog) -> None:
    release = write_release(tmp_path / "rel", FILES[:6])
    with caplog.at_level(logging.WARNING):
        first = prepare_kermany(release, tmp_path / "out")
    assert first.missing == [f"test/{c}" for c in CLASSES] and "not in the release" in caplog.text
    again = prepare_kermany(release, tmp_path / "out")
    assert again.skipped_volumes == again.volumes == 5
    full = write_release(tmp_path / "full", FILES)
    archive = tmp_path / "ZhangLabData.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in FILES:  # the Mendeley archive's folders: CellData/OCT/{train,test}
            zf.write(full / name, "CellData/OCT/" + name.removeprefix("OCT2017/"))
    assert prepare_kermany(archive, tmp_path / "zip").volumes == 9


def test_bad_input(tmp_path: Path) -> None:
    release = write_release(tmp_path / "rel", FILES[:2])
    with pytest.raises(ValueError, match="one folder level too deep"):
        prepare_kermany(release / "OCT2017" / "train", tmp_path / "a")
    write_jpeg(release / "OCT2017/train/DME/CNV-1009-1.jpeg", 0)
    with pytest.raises(ValueError, match="named for class CNV but lies in DME"):
        prepare_kermany(release, tmp_path / "b")
    (release / "OCT2017/train/DME/CNV-1009-1.jpeg").unlink()
    (release / "OCT2017/train/CNV/CNV-1001-2.jpeg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="CNV-1001-2.jpeg could not be read"):
        prepare_kermany(release, tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No Kermany 2018 image found"):
        prepare_kermany(tmp_path / "empty", tmp_path / "d")
