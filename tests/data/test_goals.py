"""GOALS release parser and preparation on tiny images in the official layout."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from octseg.data.goals import prepare_goals, split_specs
from octseg.data.prepared import read_prepared
from octseg.utils.config import repo_root
from tests.data.prepared_run import fast_dev_run, write_split
from tests.data.release_fixtures import GOALS_SHAPE, goals_mask, write_goals_release, write_png

H, W = GOALS_SHAPE


def test_prepare_remaps_mask_values_and_keeps_glaucoma(tmp_path: Path) -> None:
    out = tmp_path / "data" / "goals"
    summary = prepare_goals(write_goals_release(tmp_path / "rel"), out)
    assert (summary.volumes, summary.labelled_bscans, summary.missing) == (6, 6, [])
    volumes = {v[0].volume_id: v[0] for v in read_prepared(out, "goals")}
    scan = volumes["train_0003"]
    assert scan.image.dtype == np.uint8 and scan.image.shape == (H, W)
    expected = np.zeros((H, W), np.uint8)
    expected[3:6], expected[6:9], expected[13:17] = 1, 2, 3
    np.testing.assert_array_equal(scan.mask, expected)
    meta = json.loads((out / "volumes" / "train_0003" / "volume.json").read_text())["meta"]
    assert meta["glaucoma"] == 1 and meta["file"] == "0003.png"
    assert (
        json.loads((out / "volumes/train_0004/volume.json").read_text())["meta"]["glaucoma"] == 0
    )


def test_partial_release_warns_and_rerun_skips(tmp_path: Path, caplog) -> None:
    release, out = write_goals_release(tmp_path / "rel", sheet=False), tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        summary = prepare_goals(release, out, sets=["Train", "Validation"])
    assert summary.missing == ["Validation", "Train/Train_GC_GT.xlsx"]
    assert "Validation" in caplog.text
    assert prepare_goals(release, out, sets=["Train", "Validation"]).skipped_volumes == 6


def test_unlabelled_set_is_prepared_without_masks(tmp_path: Path) -> None:
    release = write_goals_release(tmp_path / "rel", n=2, masks=False)
    summary = prepare_goals(release / "GOALS2022-Train", tmp_path / "out")
    assert (summary.bscans, summary.labelled_bscans) == (2, 0)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("values", r"label values \[7\] .*\(0 RNFL, 80 GCIPL"),
        ("shape", r"is \(20, 27\) but"),
        ("sheet", "expected ImgName and GC_Label"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, damage: str, message: str) -> None:
    release = write_goals_release(tmp_path / "rel")
    train = release / "GOALS2022-Train" / "Train"
    if damage == "values":
        bad = goals_mask()
        bad[0, 0] = 7
        write_png(train / "Layer_Masks" / "0002.png", bad)
    elif damage == "shape":
        write_png(train / "Layer_Masks" / "0002.png", goals_mask()[:, :27].copy())
    else:
        book = openpyxl.Workbook()
        book.active.append(["name", "label"])
        book.save(train / "Train_GC_GT.xlsx")
    with pytest.raises(ValueError, match=message) as err:
        prepare_goals(release, tmp_path / "out")
    assert ("0002.png" if damage != "sheet" else "Train_GC_GT.xlsx") in str(err.value)


def test_wrong_level_is_refused(tmp_path: Path) -> None:
    release = write_goals_release(tmp_path / "rel")
    with pytest.raises(ValueError, match="is the Image folder"):
        prepare_goals(release / "GOALS2022-Train/Train/Image", tmp_path / "out")
    with pytest.raises(ValueError, match="No GOALS set folder"):
        prepare_goals(release / "GOALS2022-Train/Train/Layer_show", tmp_path / "out")


def test_published_splits_match_the_rules() -> None:
    folder = repo_root() / "splits" / "goals"
    specs = split_specs()
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(specs)
    for name, spec in specs.items():
        assert json.loads((folder / f"{name}.json").read_text()) == spec
    holdout = specs["holdout"]["folds"][0]
    assert sorted(holdout["train"] + holdout["val"] + holdout["test"]) == specs["challenge"][
        "folds"][0]["train"]  # fmt: skip


def test_dev_run_through_train(tmp_path: Path) -> None:
    root = tmp_path / "data"
    prepare_goals(write_goals_release(tmp_path / "rel"), root / "goals")
    split = write_split(tmp_path / "t.json", ["train_0001", "train_0002", "train_0003"],
                        ["train_0004"], ["train_0005", "train_0006"], unit="volume")  # fmt: skip
    metrics = fast_dev_run(tmp_path / "run", "goals", root, split, "overlap",
                           "metrics@val_metrics=overlap", augmentation="light")  # fmt: skip
    assert not math.isnan(metrics["test/dice"])
