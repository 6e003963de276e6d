"""The shared prepared layout: atomic per-volume writing, reruns, reading back through the
generic DataModule with per-volume spacing and unlabelled scans."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from octseg.data.base import BScanRecord
from octseg.data.prepared import (
    MARKER_NAME,
    PreparedDataModule,
    PreparedWriter,
    read_prepared,
)


def _volume(vid: str, subject: str, spacing, n: int = 2, labelled: bool = True, dtype=np.uint16):
    rng = np.random.default_rng(len(vid))
    records = []
    for k in range(n):
        image = rng.integers(0, np.iinfo(dtype).max, (12, 9), dtype=dtype)
        mask = np.zeros((12, 9), np.uint8)
        mask[6:] = 1
        mask[0, 0] = 255
        records.append(BScanRecord(image, mask if labelled else None, f"{vid}_{k:02d}", vid, k,
                                   spacing, subject))  # fmt: skip
    return records


def _split(tmp_path: Path) -> Path:
    spec = {"unit": "subject", "protocol": "toy",
            "folds": [{"train": ["s1"], "val": [], "test": ["s2"]}]}  # fmt: skip
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(spec))
    return path


def test_round_trip_keeps_dtype_spacing_and_unlabelled_scans(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    writer = PreparedWriter(out, "toy", {"grader": 1}, num_classes=2)
    writer.write_volume(_volume("v1", "s1", (3.9, 11.3, 120.0)), meta={"vendor": "x"})
    writer.write_volume(_volume("v2", "s2", (2.0, 6.0, math.nan), labelled=False))
    summary = writer.finish(missing=["v3"])
    assert (summary.subjects, summary.volumes, summary.bscans, summary.labelled_bscans) == (
        2, 2, 4, 2)  # fmt: skip
    assert summary.label_counts == {"0": 2 * 53, "1": 2 * 54, "255": 2}
    assert "missing from the release" in summary.as_text()
    volumes = list(read_prepared(out, "toy"))
    assert [len(v) for v in volumes] == [2, 2]
    first = volumes[0][0]
    assert first.image.dtype == np.uint16 and first.spacing_um == (3.9, 11.3, 120.0)
    np.testing.assert_array_equal(first.image, _volume("v1", "s1", None)[0].image)
    assert volumes[1][0].mask is None and math.isnan(volumes[1][0].spacing_um[2])

    dm = PreparedDataModule(out, "toy", split=str(_split(tmp_path)), batch_size=2)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert "mask" not in batch  # the test subject's scans are unlabelled
    assert batch["spacing_um"][0, :2].tolist() == [2.0, 6.0]
    train = next(iter(dm.train_dataloader()))
    assert train["spacing_um"][0].tolist() == pytest.approx([3.9, 11.3, 120.0])
    assert 0.0 <= float(train["image"].min()) and float(train["image"].max()) <= 1.0


def test_rerun_skips_volumes_and_interrupted_volumes_leave_nothing(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    writer = PreparedWriter(out, "toy", {}, num_classes=2)
    writer.write_volume(_volume("v1", "s1", (1.0, 1.0, 1.0)))
    (out / "volumes" / ".tmp-v2" / "images").mkdir(parents=True)  # a killed run's leftovers
    writer.finish()
    again = PreparedWriter(out, "toy", {}, num_classes=2)
    assert not (out / "volumes" / ".tmp-v2").exists()
    assert again.has_volume("v1") and not again.has_volume("v2")
    again.skip_volume("v1")
    assert again.finish().skipped_volumes == 1
    with pytest.raises(ValueError, match="prepared with other settings"):
        PreparedWriter(out, "toy", {"grader": 2}, num_classes=2)


def test_bad_input_is_named(tmp_path: Path) -> None:
    writer = PreparedWriter(tmp_path / "toy", "toy", {}, num_classes=2)
    bad = _volume("v1", "s1", None)
    bad[1].mask[3, 3] = 7
    with pytest.raises(ValueError, match=r"Scan 'v1_01': labels \[7\] outside 0..1"):
        writer.write_volume(bad)
    assert not (tmp_path / "toy" / "volumes" / "v1").exists()
    with pytest.raises(ValueError, match="may only use letters"):
        writer.write_volume(_volume("v 1", "s1", None))
    with pytest.raises(ValueError, match="No volume was prepared"):
        writer.finish()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="not an OCTSeg prepared folder"):
        PreparedWriter(tmp_path / "other", "toy", {}, num_classes=2)
    with pytest.raises(FileNotFoundError, match="scripts/prepare_toy.py"):
        list(read_prepared(tmp_path / "toy", "toy"))
    (tmp_path / "toy" / MARKER_NAME).write_text("{broken")
    with pytest.raises(ValueError, match="is damaged"):
        list(read_prepared(tmp_path / "toy", "toy"))
