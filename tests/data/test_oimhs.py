"""OIMHS release parser and preparation on tiny composites in the official layout."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from octseg.data.oimhs import COLOURS, DEMOGRAPHICS, prepare_oimhs, split_specs
from octseg.data.prepared import read_prepared
from octseg.utils.config import repo_root
from tests.data.prepared_run import fast_dev_run, write_split
from tests.data.release_fixtures import write_png

H = 8  # rows; the release's composites are 1024 columns wide (512 + 512)
# eye id -> patient id; patient 2 has two eyes
EYES = {"1": "1", "2": "2", "3": "2", "4": "3"}


def _labels(k: int) -> np.ndarray:
    labels = np.zeros((H, 512), np.uint8)
    labels[2:5], labels[5:7] = 1, 2
    labels[3, 10 : 20 + k], labels[2:4, 100:140] = 3, 4
    return labels


def _composite(k: int) -> np.ndarray:
    colour = {v: k for k, v in COLOURS.items()}
    grey = np.random.default_rng(k).integers(0, 256, (H, 512), dtype=np.uint8)
    right = np.array([colour[v] for v in _labels(k).ravel()], np.uint8).reshape(H, 512, 3)
    return np.concatenate([np.stack([grey] * 3, -1), right], axis=1)


def _release(root: Path, eyes: dict[str, str] = EYES, listed: dict[str, str] = EYES) -> Path:
    base = root / "OIMHS"
    for eye in eyes:
        for k in (1, 2):
            write_png(base / "Images" / eye / f"{k}.png", _composite(k))
    rows = ["Patient ID,Eye ID,Eye category,Age(years),Sex,Stage"]
    rows += [f"{p},{e},OD,60,F,3" for e, p in listed.items()]
    (base / DEMOGRAPHICS).write_text("\n".join(rows) + "\n", encoding="utf-8-sig")
    (base / "Quality Assessment.csv").write_text("Eye ID,Image ID,Low signal strength\n")
    return root


def test_prepare_splits_composites_and_maps_colours(tmp_path: Path) -> None:
    out = tmp_path / "data" / "oimhs"
    summary = prepare_oimhs(_release(tmp_path / "rel"), out)
    assert (summary.subjects, summary.volumes, summary.bscans) == (3, 4, 8)
    volumes = {v[0].volume_id: v for v in read_prepared(out, "oimhs")}
    assert sorted(volumes) == ["eye_1", "eye_2", "eye_3", "eye_4"]
    assert {r.subject_id for r in volumes["eye_3"]} == {"patient_2"}
    second = volumes["eye_2"][1]
    assert second.case_id == "eye_2_002" and second.bscan_index == 2
    np.testing.assert_array_equal(second.image, _composite(2)[:, :512, 0])
    np.testing.assert_array_equal(second.mask, _labels(2))
    assert summary.label_counts["4"] == 8 * 2 * 40  # 8 scans, 2 rows x 40 columns of hole


def test_partial_release_warns_and_rerun_skips(tmp_path: Path, caplog) -> None:
    release, out = _release(tmp_path / "rel", eyes={"1": "1", "4": "3"}), tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        summary = prepare_oimhs(release / "OIMHS", out)
    assert summary.missing == ["eye_2", "eye_3"] and "eye_3" in caplog.text
    assert prepare_oimhs(release, out).skipped_volumes == 2


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("colour", r"label colours \[\(10, 200, 30\)\]"),
        ("width", "expected a colour composite 1024 columns wide"),
        ("grey", "image mode 'L'"),
    ],
)
def test_bad_composites_are_named(tmp_path: Path, damage: str, message: str) -> None:
    release = _release(tmp_path / "rel")
    path = release / "OIMHS" / "Images" / "3" / "2.png"
    bad = _composite(2)
    if damage == "colour":
        bad[0, 600] = (10, 200, 30)
    elif damage == "width":
        bad = bad[:, :1000].copy()
    else:
        bad = bad[..., 0].copy()
    write_png(path, bad)
    with pytest.raises(ValueError, match=message) as err:
        prepare_oimhs(release, tmp_path / "out")
    assert "Images/3/2.png" in str(err.value)


def test_unlisted_eye_and_wrong_level_are_refused(tmp_path: Path) -> None:
    release = _release(tmp_path / "rel", listed={"1": "1", "2": "2", "3": "2"})
    with pytest.raises(ValueError, match=r"Eye folders \['4'\] .* not in Demographics"):
        prepare_oimhs(release, tmp_path / "out")
    with pytest.raises(ValueError, match="Images folder or one eye's folder"):
        prepare_oimhs(release / "OIMHS" / "Images" / "1", tmp_path / "out")
    (release / "OIMHS" / DEMOGRAPHICS).write_text("Eye,Patient\n1,1\n")
    with pytest.raises(ValueError, match="expected 'Patient ID' and 'Eye ID'"):
        prepare_oimhs(release, tmp_path / "out")


def test_published_split_is_by_patient() -> None:
    folder = repo_root() / "splits" / "oimhs"
    spec = split_specs()["default"]
    assert json.loads((folder / "default.json").read_text()) == spec
    fold = spec["folds"][0]
    assert spec["unit"] == "subject"
    assert sorted(fold["train"] + fold["val"] + fold["test"]) == sorted(
        f"patient_{n}" for n in range(1, 120)
    )
    assert (len(fold["train"]), len(fold["val"]), len(fold["test"])) == (84, 12, 23)


def test_dev_run_through_train(tmp_path: Path) -> None:
    root = tmp_path / "data"
    prepare_oimhs(_release(tmp_path / "rel"), root / "oimhs")
    split = write_split(tmp_path / "t.json", ["patient_2"], ["patient_1"], ["patient_3"])
    metrics = fast_dev_run(tmp_path / "run", "oimhs", root, split, "fluid",
                           "metrics@val_metrics=overlap", augmentation="light")  # fmt: skip
    assert not math.isnan(metrics["test/dice"])
