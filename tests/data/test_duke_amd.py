"""Duke RPEDC (A2A) and Duke Chiu 2012: release layouts, 'layerMaps' / 'manualLayers<g>' to
labels, traced B-scans and columns only, graders, reruns, partial releases, bad input, dev runs."""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from octseg.data.duke_amd import prepare_duke_chiu2012, prepare_duke_rpedc
from octseg.data.prepared import read_prepared
from octseg.data.splits import load_split
from tests.conftest import REPO_ROOT
from tests.data.prepared_run import fast_dev_run, run_prepare_script, write_split

H, W, N = 20, 12, 4  # rows, A-scans, B-scans (the release: 512, 1000, 100)
TRACED_BSCANS, TRACED_COLS = (1, 2), slice(2, 10)
ROWS = np.array([5.0, 12.0, 15.0])  # ILM, inner RPEDC, outer BM


def _surfaces(shift: float = 0.0) -> np.ndarray:
    """[B-scan, surface, A-scan]: traced in B-scans 1-2, columns 2..9; B-scan 2 has a hole."""
    s = np.full((N, 3, W), np.nan)
    for b in TRACED_BSCANS:
        s[b][:, TRACED_COLS] = ROWS[:, None] + shift + 0.5
    s[2, 1, 4] = np.nan  # one surface untraced inside the traced region: column ignored
    return s


def _images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, N), dtype=np.uint8)


def write_rpedc(root: Path, subjects=(("AMD", 1001), ("AMD", 1002), ("Control", 1001))) -> Path:
    """AMD/ and Control/ folders of Farsiu_Ophthalmology_2013_<group>_Subject_<n>.mat."""
    for group, n in subjects:
        (root / group).mkdir(parents=True, exist_ok=True)
        layer_maps = np.transpose(_surfaces(), (0, 2, 1))  # (B-scan, A-scan, surface)
        scipy.io.savemat(root / group / f"Farsiu_Ophthalmology_2013_{group}_Subject_{n}.mat",
                         {"images": _images(n), "layerMaps": layer_maps, "Age": 70.0})  # fmt: skip
    return root


def write_chiu(root: Path, volumes=("Group1_Volume1", "Group2_Volume3")) -> Path:
    folder = root / "Chiu_IOVS_2011" / "Automatic versus Manual Study"
    folder.mkdir(parents=True)
    for k, v in enumerate(volumes):
        fields = {"images": _images(k), "automaticLayers": np.transpose(_surfaces(), (1, 2, 0))}
        for g in (1, 2):
            fields[f"manualLayers{g}"] = np.transpose(_surfaces(g - 1.0), (1, 2, 0))  # (3, W, n)
        scipy.io.savemat(folder / f"{v}.mat", fields)
    return root


def _expected_column(shift: float = 0.0) -> np.ndarray:
    return np.searchsorted(np.floor(ROWS + shift + 0.5), np.arange(H), side="right")


def test_rpedc_labels_traced_scans_columns_and_partial_release(tmp_path: Path, caplog) -> None:
    release = write_rpedc(tmp_path / "release")
    with caplog.at_level(logging.WARNING):
        summary = prepare_duke_rpedc(release, tmp_path / "duke_rpedc")
    assert (summary.volumes, summary.bscans, summary.subjects) == (3, 6, 3)
    assert len(summary.missing) == 269 + 115 - 3 and "AMD_1003" in summary.missing
    assert "Control_1115" in summary.missing and "not in the release" in caplog.text
    volumes = {v[0].volume_id: v for v in read_prepared(tmp_path / "duke_rpedc", "duke_rpedc")}
    scans = volumes["AMD_1002"]
    assert [s.bscan_index for s in scans] == [1, 2] and scans[0].case_id == "AMD_1002_001"
    np.testing.assert_array_equal(scans[0].image, _images(1002)[:, :, 1])
    mask = scans[1].mask
    for col in range(W):
        if col in range(2, 10) and col != 4:
            np.testing.assert_array_equal(mask[:, col], _expected_column())
        else:
            assert (mask[:, col] == 255).all(), col
    assert scans[0].spacing_um is None and scans[0].subject_id == "AMD_1002"
    rows = np.load(tmp_path / "duke_rpedc" / "volumes" / "AMD_1002" / "surfaces" /
                   "AMD_1002_002.npy")  # fmt: skip
    np.testing.assert_array_equal(rows, _surfaces()[2].astype(np.float32))
    again = prepare_duke_rpedc(release, tmp_path / "duke_rpedc")
    assert again.skipped_volumes == 3
    strict = prepare_duke_rpedc(release, tmp_path / "strict", min_traced=0.6)
    assert strict.bscans == 3  # B-scan 1: 8 of 12 columns traced; B-scan 2: 7 (< 0.6)


def test_chiu2012_graders_archive_and_script(tmp_path: Path, capsys) -> None:
    release = write_chiu(tmp_path / "release")
    summary = prepare_duke_chiu2012(release, tmp_path / "g2", grader=2)
    assert summary.volumes == 2 and len(summary.missing) == 18
    scans = next(iter(read_prepared(tmp_path / "g2", "duke_chiu2012")))
    assert scans[0].volume_id == "Group1_Volume1"
    np.testing.assert_array_equal(scans[0].mask[:, 3], _expected_column(1.0))  # grader 2
    archive = tmp_path / "Chiu.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(release.rglob("*.mat")):
            z.write(path, path.relative_to(release))
    args = [str(archive), str(tmp_path / "g1"), "--grader", "1", "--min-traced", "0.5"]
    assert run_prepare_script("duke_chiu2012", args) == 0
    assert "duke_chiu2012 prepared" in capsys.readouterr().out
    scans = next(iter(read_prepared(tmp_path / "g1", "duke_chiu2012")))
    np.testing.assert_array_equal(scans[0].mask[:, 3], _expected_column())


def test_bad_input_is_named(tmp_path: Path) -> None:
    release = write_rpedc(tmp_path / "r", subjects=(("AMD", 1001),))
    with pytest.raises(FileNotFoundError, match=r"expected the Duke Chiu 2012 .* \(.mat files"):
        prepare_duke_chiu2012(release, tmp_path / "o0")  # an RPEDC folder
    with pytest.raises(ValueError, match="min_traced must be in"):
        prepare_duke_rpedc(release, tmp_path / "o1", min_traced=1.5)
    mat = release / "AMD" / "Farsiu_Ophthalmology_2013_AMD_Subject_1001.mat"
    scipy.io.savemat(mat, {"images": _images(0)})
    with pytest.raises(ValueError, match=r"lacks the variable\(s\) \['layerMaps'\]"):
        prepare_duke_rpedc(release, tmp_path / "o2")
    scipy.io.savemat(mat, {"images": _images(0), "layerMaps": np.zeros((N, W, 2))})
    with pytest.raises(ValueError, match=r"'layerMaps' is \(4, 12, 2\), expected \(4, 12, 3\)"):
        prepare_duke_rpedc(release, tmp_path / "o3")
    bad = np.transpose(_surfaces(), (0, 2, 1)).copy()
    bad[1, 3, 2] = H + 5
    scipy.io.savemat(mat, {"images": _images(0), "layerMaps": bad})
    with pytest.raises(ValueError, match="B-scan 2: surface rows .* outside the image rows"):
        prepare_duke_rpedc(release, tmp_path / "o4")
    scipy.io.savemat(mat, {"images": _images(0), "layerMaps": np.full((N, W, 3), np.nan)})
    with pytest.raises(ValueError, match="no traced B-scan"):
        prepare_duke_rpedc(release, tmp_path / "o5")
    mat.write_bytes(mat.read_bytes()[:200])
    with pytest.raises(ValueError, match="could not be read as a MATLAB file"):
        prepare_duke_rpedc(release, tmp_path / "o6")
    with pytest.raises(ValueError, match="grader must be 1 or 2"):
        prepare_duke_chiu2012(release, tmp_path / "o7", grader=3)


def test_kfold_splits_follow_their_rule() -> None:
    for name, groups in (
        ("duke_rpedc", [[f"AMD_{i}" for i in range(1001, 1270)],
                        [f"Control_{i}" for i in range(1001, 1116)]]),
        ("duke_chiu2012", [[f"Group{g}_Volume{v}" for g in range(1, 5) for v in range(1, 6)]]),
    ):  # fmt: skip
        for fold in range(5):
            info = load_split("kfold", fold, REPO_ROOT / "splits" / name)
            want = [s for ids in groups for i, s in enumerate(ids) if i % 5 == fold]
            assert info["test"] == want
            assert len(info["train"] + info["val"] + info["test"]) == sum(map(len, groups))


def test_fast_dev_runs_through_train(tmp_path: Path) -> None:
    write_rpedc(tmp_path / "r")
    prepare_duke_rpedc(tmp_path / "r", tmp_path / "data" / "duke_rpedc")
    split = write_split(tmp_path / "s.json", ["AMD_1001"], ["AMD_1002"], ["Control_1001"])
    assert math.isfinite(fast_dev_run(tmp_path / "a", "duke_rpedc", tmp_path / "data",
                                      split)["test/dice"])  # fmt: skip
    write_chiu(tmp_path / "c", volumes=("Group1_Volume1", "Group1_Volume2", "Group2_Volume1"))
    prepare_duke_chiu2012(tmp_path / "c", tmp_path / "data" / "duke_chiu2012")
    split = write_split(tmp_path / "c.json", ["Group1_Volume1"], ["Group1_Volume2"],
                        ["Group2_Volume1"])  # fmt: skip
    metrics = fast_dev_run(tmp_path / "b", "duke_chiu2012", tmp_path / "data", split)
    assert math.isfinite(metrics["test/dice"])
