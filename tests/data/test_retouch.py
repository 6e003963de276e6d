"""RETOUCH release parser and preparation on tiny volumes in the official layout."""

from __future__ import annotations

import json
import logging
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from octseg.data.prepared import read_prepared
from octseg.data.retouch import (
    find_volumes,
    prepare_retouch,
    read_mhd,
    split_specs,
    vendor_of,
    volume_ids,
)
from octseg.utils.config import repo_root
from tests.data.prepared_run import fast_dev_run, write_split
from tests.data.release_fixtures import write_mhd

# (vendor folder, release sub-folder or None for the copies without it, volume, dtype, spacing)
_C, _S, _T = (f"RETOUCH-TrainingSet-{v}" for v in ("Cirrus", "Spectralis", "Topcon"))
VOLUMES = [
    ("TrainingCirrus", _C, "TRAIN001", np.uint8, (0.011742, 0.001955, 0.047)),
    ("TrainingCirrus", _C, "TRAIN002", np.uint8, (0.011742, 0.001955, 0.047244)),
    (None, _S, "TRAIN025", np.uint16, (0.011301, 0.003872, 0.12)),
    ("TrainingTopcon", _T, "TRAIN049", np.uint8, (0.01172, 0.0026, 0.04688)),
]  # fmt: skip
SHAPE = (3, 20, 16)  # B-scans, rows (axial), columns (lateral)


def _labels(seed: int) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[:, 6:9, 2:7] = 1  # IRF
    labels[:, 12:14, 5:12] = 2  # SRF
    labels[1:, 15:17, 8:15] = 3  # PED
    labels[seed % 3, 0, 0] = 3
    return labels


def _release(root: Path) -> Path:
    for i, (outer, inner, vid, dtype, spacing) in enumerate(VOLUMES):
        folder = root / (outer or "") / inner / vid
        rng = np.random.default_rng(i)
        oct_ = rng.integers(0, 250 if dtype == np.uint8 else 60000, SHAPE, dtype=dtype)
        write_mhd(folder / "oct.mhd", oct_, spacing)
        write_mhd(folder / "reference.mhd", _labels(i), spacing)
    return root


def test_mhd_reads_zyx_native_dtype_and_spacing(tmp_path: Path) -> None:
    volume = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)
    mhd = write_mhd(tmp_path / "oct.mhd", volume, (0.011, 0.0039, 0.12))
    array, header = read_mhd(mhd)
    assert array.dtype == np.uint16 and array.shape == SHAPE
    np.testing.assert_array_equal(array, volume)
    assert header.spacing_xyz_mm == (0.011, 0.0039, 0.12)
    assert "DimSize = 16 20 3" in mhd.read_text()  # x fastest in the header


def test_prepare_parses_volumes_labels_spacing_and_vendor(tmp_path: Path) -> None:
    out = tmp_path / "data" / "retouch"
    summary = prepare_retouch(_release(tmp_path / "release"), out)
    assert (summary.volumes, summary.bscans, summary.labelled_bscans) == (4, 12, 12)
    volumes = {v[0].volume_id: v for v in read_prepared(out, "retouch")}
    assert sorted(volumes) == ["TRAIN001", "TRAIN002", "TRAIN025", "TRAIN049"]
    spectralis = volumes["TRAIN025"]
    assert (
        spectralis[0].image.dtype == np.uint16 and volumes["TRAIN001"][0].image.dtype == np.uint8
    )
    assert spectralis[0].spacing_um == pytest.approx((3.872, 11.301, 120.0))
    assert [r.bscan_index for r in spectralis] == [0, 1, 2]
    np.testing.assert_array_equal(np.stack([r.mask for r in spectralis]), _labels(2))
    oct_, _ = read_mhd(next(tmp_path.rglob("TRAIN025/oct.mhd")))
    np.testing.assert_array_equal(spectralis[1].image, oct_[1])
    meta = json.loads((out / "volumes" / "TRAIN049" / "volume.json").read_text())["meta"]
    assert meta["vendor"] == "Topcon" and meta["fluid_present"] == ["IRF", "SRF", "PED"]
    assert summary.missing == [v for v in volume_ids() if v not in volumes]


def test_archive_as_downloaded_and_partial_release_warns(tmp_path: Path, caplog) -> None:
    release = _release(tmp_path / "release")
    archive = tmp_path / "RETOUCH-TrainingSet-Cirrus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (release / "TrainingCirrus").rglob("*"):
            zf.write(path, path.relative_to(release / "TrainingCirrus"))
    with caplog.at_level(logging.WARNING):
        summary = prepare_retouch(archive, tmp_path / "out", vendors=["Cirrus"])
    assert summary.volumes == 2
    assert summary.missing == [f"TRAIN{i:03d}" for i in range(3, 25)]
    assert "TRAIN024" in caplog.text and "not prepared" in caplog.text


def test_rerun_skips_written_volumes(tmp_path: Path) -> None:
    release, out = _release(tmp_path / "release"), tmp_path / "out"
    prepare_retouch(release, out)
    stamp = (out / "volumes" / "TRAIN001" / "volume.json").stat().st_mtime_ns
    again = prepare_retouch(release, out)
    assert again.skipped_volumes == 4 and again.volumes == 4
    assert (out / "volumes" / "TRAIN001" / "volume.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other settings"):
        prepare_retouch(release, out, vendors=["Topcon"])


def test_truncated_raw_is_named(tmp_path: Path) -> None:
    release = _release(tmp_path / "release")
    raw = next(release.rglob("TRAIN025/oct.raw"))
    raw.write_bytes(raw.read_bytes()[:-10])
    with pytest.raises(
        ValueError, match=r"TRAIN025/oct.raw is truncated: it holds 1910 bytes .* 1920"
    ):
        prepare_retouch(release, tmp_path / "out")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("keys", "not a 3-D MetaImage header"),
        ("labels", r"label values \[0, 1, 2, 3, 7\]"),
        ("shape", r"has shape \(z, y, x\) \(3, 20, 15\)"),
        ("reference", "reference.mhd is missing"),
    ],
)
def test_bad_volume_errors_name_the_file(tmp_path: Path, damage: str, message: str) -> None:
    release = _release(tmp_path / "release")
    folder = next(release.rglob("TRAIN049"))
    if damage == "keys":
        (folder / "oct.mhd").write_text("ObjectType = Image\nNDims = 3\n")
    elif damage == "labels":
        labels = _labels(3)
        labels[0, 0, 1] = 7
        write_mhd(folder / "reference.mhd", labels, (0.01, 0.003, 0.05))
    elif damage == "shape":
        write_mhd(folder / "reference.mhd", _labels(3)[:, :, :15].copy(), (0.01, 0.003, 0.05))
    else:
        (folder / "reference.mhd").unlink()
    with pytest.raises(ValueError, match=message) as err:
        prepare_retouch(release, tmp_path / "out")
    assert "TRAIN049" in str(err.value)


def test_wrong_folder_level_and_empty_release(tmp_path: Path) -> None:
    release = _release(tmp_path / "release")
    with pytest.raises(ValueError, match="single volume folder"):
        prepare_retouch(next(release.rglob("TRAIN001")), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No RETOUCH training volume"):
        find_volumes(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        find_volumes(tmp_path / "absent")


def test_published_splits_match_the_rules() -> None:
    folder = repo_root() / "splits" / "retouch"
    specs = split_specs()
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(specs)
    for name, spec in specs.items():
        assert json.loads((folder / f"{name}.json").read_text()) == spec
    for fold in specs["kfold"]["folds"]:
        parts = [fold["train"], fold["val"], fold["test"]]
        assert sorted(sum(parts, [])) == volume_ids()  # every volume once
        vendors = {vendor_of(v) for v in fold["test"]}
        assert vendors == {"Cirrus", "Spectralis", "Topcon"}  # stratified
    for fold in specs["lovo"]["folds"]:
        assert {vendor_of(v) for v in fold["test"]} == {fold["test_vendor"]}
        assert fold["test_vendor"] not in {vendor_of(v) for v in fold["train"] + fold["val"]}
        assert len(fold["train"]) + len(fold["val"]) + len(fold["test"]) == 70


def test_dev_run_through_train(tmp_path: Path) -> None:
    root = tmp_path / "data"
    prepare_retouch(_release(tmp_path / "release"), root / "retouch")
    split = write_split(tmp_path / "tiny.json", ["TRAIN001", "TRAIN025"], ["TRAIN002"],
                        ["TRAIN049"], unit="volume")  # fmt: skip
    metrics = fast_dev_run(tmp_path / "run", "retouch", root, split, "fluid",
                           "metrics@val_metrics=overlap", augmentation="light")  # fmt: skip
    assert "test/dice" in metrics and not math.isnan(metrics["test/dice"])
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
