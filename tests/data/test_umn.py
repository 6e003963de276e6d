"""UMN DME and UMN AMD: one .mat per release (AllSubjects / ManualFluid1/2 cell arrays), the
DME subject without masks, grader choice, reruns, partial files, bad input and a dev run."""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from octseg.data.prepared import read_prepared
from octseg.data.splits import load_split
from octseg.data.umn import prepare_umn_amd, prepare_umn_dme
from tests.conftest import REPO_ROOT
from tests.data.prepared_run import fast_dev_run, run_prepare_script, write_split

SHAPE = (12, 16, 3)  # rows, A-scans, B-scans (the release: 496, 1024, 25)


def _cell(arrays: list[np.ndarray]) -> np.ndarray:
    cell = np.empty((1, len(arrays)), dtype=object)
    for i, a in enumerate(arrays):
        cell[0, i] = a
    return cell


def _fluid(subject: int, grader: int) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[4:7, subject : subject + 3 + grader, 1] = 1  # grader 2 marks one column more
    return mask


def write_mat(path: Path, subjects: int, labelled: int, **extra: np.ndarray) -> Path:
    """A UMN release file: ``subjects`` stacks, masks for the first ``labelled`` of them."""
    rng = np.random.default_rng(subjects)
    stacks = [rng.integers(0, 256, SHAPE, dtype=np.uint8) for _ in range(subjects)]
    fields = {"AllSubjects": _cell(stacks)}
    for grader in (1, 2):
        fields[f"ManualFluid{grader}"] = _cell([_fluid(s, grader) for s in range(labelled)])
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {**fields, **extra})
    return path


def test_dme_prepares_labels_graders_and_the_unlabelled_subject(tmp_path: Path, caplog) -> None:
    mat = write_mat(tmp_path / "release" / "UMNDataset.mat", subjects=30, labelled=29)
    with caplog.at_level(logging.WARNING):
        summary = prepare_umn_dme(mat, tmp_path / "umn_dme", grader=2)
    assert (summary.volumes, summary.bscans, summary.labelled_bscans) == (30, 90, 87)
    assert summary.missing == ["Subject_30 (no masks)"] and "Subject_30" in caplog.text
    volumes = {v[0].volume_id: v for v in read_prepared(tmp_path / "umn_dme", "umn_dme")}
    scan = volumes["Subject_03"][1]
    assert (scan.case_id, scan.bscan_index, scan.image.dtype) == ("Subject_03_01", 1, np.uint8)
    np.testing.assert_array_equal(scan.mask, _fluid(2, 2)[:, :, 1])
    assert scan.mask.sum() == 3 * 5 and scan.spacing_um is None
    stacks = scipy.io.loadmat(mat)["AllSubjects"]
    np.testing.assert_array_equal(scan.image, stacks[0, 2][:, :, 1])
    assert all(r.mask is None for r in volumes["Subject_30"])
    again = prepare_umn_dme(tmp_path / "release", tmp_path / "umn_dme", grader=2)  # the folder
    assert again.skipped_volumes == 30
    with pytest.raises(ValueError, match="prepared with other settings"):
        prepare_umn_dme(mat, tmp_path / "umn_dme", grader=1)


def test_amd_partial_file_archive_and_script(tmp_path: Path, capsys) -> None:
    mat = write_mat(tmp_path / "OCT" / "AMD" / "UMN_Dataset.mat", subjects=3, labelled=3)
    archive = tmp_path / "AMD.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(mat, "OCT/AMD/UMN_Dataset.mat")
    summary = prepare_umn_amd(archive, tmp_path / "umn_amd")
    assert summary.volumes == 3 and summary.missing == [f"Subject_{s:02d}" for s in range(4, 25)]
    assert run_prepare_script("umn_amd", [str(mat), str(tmp_path / "s"), "--grader", "2"]) == 0
    assert "umn_amd prepared" in capsys.readouterr().out
    assert run_prepare_script("umn_dme", [str(tmp_path / "OCT"), str(tmp_path / "d")]) == 1
    assert "holds 0 copies of UMNDataset.mat" in capsys.readouterr().err


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grader must be 1 or 2"):
        prepare_umn_dme(tmp_path, tmp_path / "o", grader=3)
    mat = tmp_path / "r" / "UMNDataset.mat"
    scipy.io.savemat(
        mat.parent.mkdir() or mat, {"AllSubjects": _cell([np.zeros(SHAPE, np.uint8)])}
    )
    with pytest.raises(ValueError, match=r"lacks the variable\(s\) \['ManualFluid1'\]"):
        prepare_umn_dme(mat, tmp_path / "o1")
    bad = _fluid(0, 1)
    bad[0, 0, 0] = 2
    scipy.io.savemat(mat, {"AllSubjects": _cell([np.zeros(SHAPE, np.uint8)]),
                           "ManualFluid1": _cell([bad])})  # fmt: skip
    with pytest.raises(ValueError, match=r"subject 1: 'ManualFluid1' holds values \[2\]"):
        prepare_umn_dme(mat, tmp_path / "o2")
    scipy.io.savemat(mat, {"AllSubjects": _cell([np.zeros(SHAPE, np.uint8)]),
                           "ManualFluid1": _cell([_fluid(0, 1)[:, :-1]])})  # fmt: skip
    with pytest.raises(ValueError, match=r"is \(12, 15, 3\) but the B-scans are \(12, 16, 3\)"):
        prepare_umn_dme(mat, tmp_path / "o3")
    scipy.io.savemat(mat, {"AllSubjects": np.zeros(SHAPE, np.uint8),
                           "ManualFluid1": _cell([_fluid(0, 1)])})  # fmt: skip
    with pytest.raises(ValueError, match="expected a cell array"):
        prepare_umn_dme(mat, tmp_path / "o4")
    mat.write_bytes(mat.read_bytes()[:300])  # truncated download
    with pytest.raises(ValueError, match="could not be read as a MATLAB file"):
        prepare_umn_dme(mat, tmp_path / "o5")


@pytest.mark.parametrize(("name", "subjects"), [("umn_dme", 29), ("umn_amd", 24)])
def test_kfold_split_follows_its_rule(name: str, subjects: int) -> None:
    ids = [f"Subject_{i:02d}" for i in range(1, subjects + 1)]
    for fold in range(5):
        info = load_split("kfold", fold, REPO_ROOT / "splits" / name)
        assert info["test"] == [s for i, s in enumerate(ids) if i % 5 == fold]
        assert info["val"] == [s for i, s in enumerate(ids) if i % 5 == (fold + 1) % 5]
        assert sorted(info["train"] + info["val"] + info["test"]) == ids


def test_fast_dev_run_through_train(tmp_path: Path) -> None:
    write_mat(tmp_path / "UMNDataset.mat", subjects=4, labelled=3)
    prepare_umn_dme(tmp_path / "UMNDataset.mat", tmp_path / "data" / "umn_dme")
    split = write_split(tmp_path / "split.json", ["Subject_01"], ["Subject_02"], ["Subject_03"])
    metrics = fast_dev_run(tmp_path / "run", "umn_dme", tmp_path / "data", split, "fluid")
    assert math.isfinite(metrics["test/dice"])
