"""AROI release parser and preparation on tiny patients in the official layout."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from octseg.data.aroi import prepare_aroi, split_specs
from octseg.data.prepared import read_prepared
from octseg.utils.config import repo_root
from tests.data.prepared_run import fast_dev_run, write_split
from tests.data.release_fixtures import write_png

H, W = 24, 16


def _labels(k: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[4:], mask[9:], mask[15:], mask[18:] = 1, 2, 3, 4
    mask[10:12, 3:6], mask[13:15, 8:12], mask[16:18, 1:3 + k] = 7, 6, 5  # fmt: skip
    return mask


def _release(root: Path, patients=(1, 2, 3, 4)) -> Path:
    base = root / "AROI - online" / "24 patient"
    for n in patients:
        for k in (12, 40):
            name = f"patient{n}_raw{k:04d}.png"
            grey = np.random.default_rng(n * 100 + k).integers(0, 256, (H, W), dtype=np.uint8)
            write_png(base / f"patient{n}" / "raw" / "labeled" / name, grey, mode="P")
            write_png(base / f"patient{n}" / "mask" / "number" / name, _labels(n % 3))
            colour = np.zeros((H, W, 4), np.uint8)
            write_png(base / f"patient{n}" / "mask" / "colour" / name, colour)
    return root


def test_prepare_keeps_grey_values_labels_and_indices(tmp_path: Path) -> None:
    release, out = _release(tmp_path / "rel"), tmp_path / "data" / "aroi"
    summary = prepare_aroi(release, out)
    assert (summary.subjects, summary.volumes, summary.bscans) == (4, 4, 8)
    volumes = {v[0].volume_id: v for v in read_prepared(out, "aroi")}
    first = volumes["patient2"][0]
    assert first.case_id == "patient2_raw0012" and first.bscan_index == 12
    raw = release / "AROI - online/24 patient/patient2/raw/labeled/patient2_raw0012.png"
    with Image.open(raw) as img:
        assert img.mode == "P"  # grey levels come through the palette, not the indices
        np.testing.assert_array_equal(first.image, np.array(img.convert("L")))
    np.testing.assert_array_equal(first.mask, _labels(2))
    assert first.spacing_um is None  # the release has none: the config's values apply
    assert summary.missing == [f"patient{n}" for n in range(5, 25)]


def test_partial_release_warns_and_rerun_skips(tmp_path: Path, caplog) -> None:
    release, out = _release(tmp_path / "rel", patients=(1, 3)), tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        summary = prepare_aroi(release / "AROI - online", out, patients=[1, 2, 3])
    assert summary.missing == ["patient2"] and "patient2" in caplog.text
    again = prepare_aroi(release, out, patients=[1, 2, 3])
    assert again.skipped_volumes == 2


@pytest.mark.parametrize(
    ("damage", "message"),
    [("labels", r"label values \[9\]"), ("shape", r"is \(24, 15\) but"), ("mask", "no label")],
)
def test_bad_files_are_named(tmp_path: Path, damage: str, message: str) -> None:
    release = _release(tmp_path / "rel")
    mask = release / "AROI - online/24 patient/patient3/mask/number/patient3_raw0040.png"
    if damage == "labels":
        bad = _labels(0)
        bad[0, 0] = 9
        write_png(mask, bad)
    elif damage == "shape":
        write_png(mask, _labels(0)[:, :15].copy())
    else:
        mask.unlink()
    with pytest.raises(ValueError, match=message) as err:
        prepare_aroi(release, tmp_path / "out")
    assert "patient3_raw0040.png" in str(err.value)


def test_wrong_level_is_refused(tmp_path: Path) -> None:
    release = _release(tmp_path / "rel")
    with pytest.raises(ValueError, match="single patient folder"):
        prepare_aroi(release / "AROI - online/24 patient/patient1", tmp_path / "out")
    with pytest.raises(ValueError, match="No AROI patient folder"):
        prepare_aroi(release / "AROI - online/24 patient/patient1/raw", tmp_path / "out")


def test_published_splits_match_the_rules() -> None:
    folder = repo_root() / "splits" / "aroi"
    specs = split_specs()
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(specs)
    for name, spec in specs.items():
        assert json.loads((folder / f"{name}.json").read_text()) == spec
        for fold in spec["folds"]:
            names = fold["train"] + fold["val"] + fold["test"]
            assert sorted(names) == sorted(f"patient{n}" for n in range(1, 25))


def test_dev_run_through_train(tmp_path: Path) -> None:
    root = tmp_path / "data"
    prepare_aroi(_release(tmp_path / "rel"), root / "aroi")
    split = write_split(tmp_path / "t.json", ["patient1", "patient2"], ["patient3"], ["patient4"])
    metrics = fast_dev_run(tmp_path / "run", "aroi", root, split, None, augmentation="light")
    assert not math.isnan(metrics["test/dice"])
