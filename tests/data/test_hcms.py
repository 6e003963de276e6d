"""HC-MS: both delineation formats, densification (real control points), label rule, header
spacing, the prepared layout, reruns, partial releases, bad input, splits and a dev run."""

from __future__ import annotations

import json
import logging
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from octseg.data.hcms import (
    SUBJECTS,
    boundaries_to_labels,
    densify_control_points,
    find_release,
    prepare_hcms,
    read_delineation,
)
from octseg.data.prepared import MARKER_NAME, read_prepared
from octseg.data.splits import load_split, partition
from tests.conftest import REPO_ROOT, SHARED_DIR
from tests.data.prepared_run import fast_dev_run, write_split
from tests.data.vol_fixtures import write_vol

REAL_MAT = SHARED_DIR / "datasets" / "fixtures" / "hcms" / "example_control_pts.mat"
N, H, W = 4, 40, 32
STEM = "{}_spectralis_macula_v1_s1_R"
# 0-based rows of the nine boundaries of the fixture (constant across columns).
ROWS = np.array([5.0, 8.0, 12.0, 15.0, 18.0, 24.0, 26.0, 29.0, 33.0])


def _control_pts(rows: np.ndarray, undelineated: tuple[int, ...] = (N - 1,)) -> np.ndarray:
    cells = np.empty((N, 11), dtype=object)
    slots = [0, 1, 3, 4, 5, 6, 7, 8, 9]  # slots 3 and 11 (1-based) stay empty, as released
    for i in range(N):
        for j in range(11):
            cells[i, j] = np.zeros((0, 0))
        if i in undelineated:
            continue
        for row, j in zip(rows, slots, strict=True):
            x = np.array([W, 1, 11, 21, 21], float)  # unsorted, one duplicate x
            cells[i, j] = np.stack([x, np.full(5, row + 1 + i)], axis=1)  # 1-based
    return cells


def _bd_pts(rows: np.ndarray) -> np.ndarray:
    bd = np.zeros((W, N, 9))
    for i in range(N - 1):  # the last B-scan undelineated (all zeros)
        bd[:, i, :] = rows[None, :] + 1 + i
    return bd


def _release(root: Path, subjects=("hc01", "hc09", "ms13"), folder="OCT_Manual_Delineations"):
    base = root / folder if folder else root
    rng = np.random.default_rng(0)
    for k, subject in enumerate(subjects):
        stem = STEM.format(subject)
        bscans = rng.random((N, H, W)).astype(np.float32) * 0.5
        write_vol(base / "vol" / f"{stem}.vol", bscans, scale_x_mm=0.0058 + 0.0001 * k)
        content = {"bd_pts": _bd_pts(ROWS)} if subject.startswith("ms") else {
            "control_pts": _control_pts(ROWS), "segmode": np.uint8(1)}  # fmt: skip
        (base / "delineation").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(base / "delineation" / f"{stem}.mat", content)
    return base


def test_control_points_are_sorted_deduplicated_extended_and_0_based() -> None:
    bounds = densify_control_points(_control_pts(ROWS), W, H)
    assert bounds.shape == (N, 9, W)
    assert np.isnan(bounds[N - 1]).all()  # undelineated B-scan
    np.testing.assert_allclose(bounds[0], np.repeat(ROWS[:, None], W, axis=1))
    np.testing.assert_allclose(bounds[2], np.repeat(ROWS[:, None] + 2, W, axis=1))
    # A boundary that dips above the one before it is raised onto it; outside its first and
    # last point a boundary keeps its end value.
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0] = np.array([[5.0, 10.0], [10.0, 10.0]])
    cells[0, 1] = np.array([[10.0, 12.0], [5.0, 8.0]])
    dense = densify_control_points(cells, 12, 20)[0] + 1
    assert dense[0].tolist() == [10.0] * 12
    assert dense[1, :4].tolist() == [10.0] * 4 and dense[1, 9:].tolist() == [12.0] * 3
    assert np.all(dense[1] >= dense[0])


def _natural_spline_by_index(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Independent check: the natural cubic spline over the point index (unit knot spacing),
    from its derivative system, evaluated at every integer x between the points."""
    n = len(y)
    a = np.diag(np.full(n, 4.0)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    a[0, 0] = a[-1, -1] = 2.0
    rhs = np.empty(n)
    rhs[0], rhs[-1] = 3 * (y[1] - y[0]), 3 * (y[-1] - y[-2])
    rhs[1:-1] = 3 * (y[2:] - y[:-2])
    d = np.linalg.solve(a, rhs)
    out = []
    for i in range(n - 1):
        t = (np.arange(x[i], x[i + 1]) - x[i]) / (x[i + 1] - x[i])
        c = [y[i], d[i], 3 * (y[i + 1] - y[i]) - 2 * d[i] - d[i + 1],
             2 * (y[i] - y[i + 1]) + d[i] + d[i + 1]]  # fmt: skip
        out.append(c[0] + c[1] * t + c[2] * t**2 + c[3] * t**3)
    return np.concatenate([*out, [y[-1]]])


@pytest.mark.skipif(not REAL_MAT.is_file(), reason=f"fixture {REAL_MAT} absent")
def test_real_control_points_densify_to_49_bscans_of_9_ordered_surfaces() -> None:
    bounds = read_delineation(REAL_MAT, 49, 1024, 496)
    assert bounds.shape == (49, 9, 1024) and np.isfinite(bounds).all()
    assert np.all(np.diff(bounds, axis=1) >= 0)  # ILM ... BM, never crossing
    cells = scipy.io.loadmat(REAL_MAT)["control_pts"]
    slots = [j for j in range(11) if j not in (2, 10)]
    # Mean rows at B-scan 24 agree with a linear interpolation of the points to < 0.5 px.
    for k, j in enumerate(slots):
        pts = np.asarray(cells[24, j])[np.argsort(np.asarray(cells[24, j])[:, 0])]
        linear = np.interp(np.arange(1, 1025), pts[:, 0], pts[:, 1]) - 1
        assert abs(bounds[24, k].mean() - linear.mean()) < 0.5
    # The ILM of B-scan 24 (unclamped) equals the natural spline over the point index.
    pts = np.asarray(cells[24, 0])[np.argsort(np.asarray(cells[24, 0])[:, 0], kind="stable")]
    x, first = np.unique(pts[:, 0], return_index=True)
    expected = _natural_spline_by_index(pts[first, 1], x.astype(int))
    np.testing.assert_allclose(bounds[24, 0, int(x[0]) - 1 : int(x[-1])] + 1, expected)


def test_labels_follow_the_toolbox_rule() -> None:
    # round(1.5) = 2 (half away from zero), round(3.2) = 3: rows 0..2 -> 0, row 3 -> 1, 4.. -> 2
    labels = boundaries_to_labels(np.array([[1.5], [3.2]]), 6)
    assert labels[:, 0].tolist() == [0, 0, 0, 1, 2, 2] and labels.dtype == np.uint8
    full = boundaries_to_labels(np.repeat(ROWS[:, None], 3, axis=1), H)
    assert full[:, 0].tolist() == [0] * 6 + [1] * 3 + [2] * 4 + [3] * 3 + [4] * 3 + [5] * 6 + [
        6] * 2 + [7] * 3 + [8] * 4 + [9] * 6  # fmt: skip


def test_prepare_end_to_end_both_formats_header_spacing(tmp_path: Path) -> None:
    _release(tmp_path / "release")
    summary = prepare_hcms(tmp_path / "release", tmp_path / "hcms")
    assert (summary.subjects, summary.volumes, summary.bscans) == (3, 3, 3 * (N - 1))
    assert summary.missing == [f"{s} (no vol and no delineation file)" for s in SUBJECTS
                               if s not in ("hc01", "hc09", "ms13")]  # fmt: skip
    volumes = {v[0].volume_id: v for v in read_prepared(tmp_path / "hcms", "hcms")}
    assert sorted(volumes) == ["hc01", "hc09", "ms13"]
    for k, vid in enumerate(["hc01", "hc09", "ms13"]):
        records = volumes[vid]
        assert [r.bscan_index for r in records] == [0, 1, 2]  # B-scan 3 undelineated: dropped
        assert records[0].spacing_um == pytest.approx((3.9, 5.8 + 0.1 * k, 123.0))
        assert records[0].image.dtype == np.uint8 and records[0].image.shape == (H, W)
        expected = boundaries_to_labels(np.repeat(ROWS[:, None] + 1, W, axis=1), H)
        np.testing.assert_array_equal(records[1].mask, expected)
        surface = np.load(tmp_path / "hcms" / "volumes" / vid / "surfaces" / f"{vid}_b01.npy")
        np.testing.assert_allclose(surface, np.repeat(ROWS[:, None] + 1, W, axis=1))
    meta = json.loads((tmp_path / "hcms" / "volumes" / "ms13" / "volume.json").read_text())
    assert meta["meta"]["intensity"] == "root" and meta["meta"]["laterality"] == "OD"


def test_zip_release_prepares_the_same_and_reruns_skip(tmp_path: Path) -> None:
    base = _release(tmp_path / "release", subjects=("hc02",))
    archive = tmp_path / "OCT_Manual_Delineations-2018_June_29.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in base.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(tmp_path / "release").as_posix())
    prepare_hcms(base, tmp_path / "from_folder", subjects=["hc02"])
    summary = prepare_hcms(archive, tmp_path / "from_zip", subjects=["hc02"])
    assert summary.volumes == 1 and summary.missing == []
    a = read_prepared(tmp_path / "from_folder", "hcms")
    b = read_prepared(tmp_path / "from_zip", "hcms")
    for ra, rb in zip(next(a), next(b), strict=True):
        np.testing.assert_array_equal(ra.image, rb.image)
        np.testing.assert_array_equal(ra.mask, rb.mask)
    again = prepare_hcms(archive, tmp_path / "from_zip", subjects=["hc02"])
    assert again.skipped_volumes == 1 and (tmp_path / "from_zip" / MARKER_NAME).is_file()
    with pytest.raises(ValueError, match="other settings"):
        prepare_hcms(archive, tmp_path / "from_zip", subjects=["hc02"], intensity="log")


def test_partial_release_warns_and_lists_missing(tmp_path: Path, caplog) -> None:
    base = _release(tmp_path / "release", subjects=("hc01", "hc02"))
    (base / "delineation" / f"{STEM.format('hc02')}.mat").unlink()
    with caplog.at_level(logging.WARNING):
        summary = prepare_hcms(base, tmp_path / "hcms", subjects=["hc01", "hc02", "ms01"])
    assert summary.missing == ["hc02 (no delineation file)", "ms01 (no vol and no "
                               "delineation file)"]  # fmt: skip
    assert "hc02 (no delineation file)" in caplog.text


def test_bad_input_errors_name_the_file(tmp_path: Path) -> None:
    base = _release(tmp_path / "release", subjects=("hc01",), folder="")
    with pytest.raises(ValueError, match="not one of them"):
        find_release(base / "vol")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_release(tmp_path / "nowhere")
    mat = base / "delineation" / f"{STEM.format('hc01')}.mat"
    vol = base / "vol" / f"{STEM.format('hc01')}.vol"

    def prepare(name: str) -> None:
        prepare_hcms(base, tmp_path / name, subjects=["hc01"])

    scipy.io.savemat(mat, {"layers": np.zeros(3)})
    with pytest.raises(ValueError, match=r"holds \['layers'\]; .* control_pts or bd_pts"):
        prepare("a")
    bd = np.zeros((W, N + 1, 9))
    bd[:, 0] = ROWS + 1
    scipy.io.savemat(mat, {"bd_pts": bd})
    with pytest.raises(ValueError, match=r"\.mat: delineation of 5 B-scans .* volume has 4"):
        prepare("b")
    cells = _control_pts(ROWS)
    cells[0, 0] = np.array([[1.0, 5.0], [W + 3.0, 5.0]])
    scipy.io.savemat(mat, {"control_pts": cells})
    with pytest.raises(ValueError, match=rf"B-scan 0 slot 1 .* expected 1-based x in 1..{W}"):
        prepare("c")
    scipy.io.savemat(mat, {"control_pts": _control_pts(ROWS)})
    vol.write_bytes(vol.read_bytes()[:-10])
    with pytest.raises(ValueError, match="could not be read as heyex_vol"):
        prepare("d")
    with pytest.raises(ValueError, match="intensity='gamma'"):
        prepare_hcms(base, tmp_path / "e", intensity="gamma")


def test_published_splits_are_by_subject_and_cover_every_subject() -> None:
    he = load_split("he2019", 0, REPO_ROOT / "splits" / "hcms")
    assert he["unit"] == "subject" and len(he["test"]) == 20
    assert sorted(he["train"] + he["val"]) == sorted(
        [f"hc{i:02d}" for i in range(9, 15)] + [f"ms{i:02d}" for i in range(13, 22)])  # fmt: skip
    assert he["val"] == ["hc09", "ms13", "ms14"]
    tested = []
    for fold in range(5):
        info = load_split("kfold", fold, REPO_ROOT / "splits" / "hcms")
        assert sorted(info["train"] + info["val"] + info["test"]) == sorted(SUBJECTS)
        assert 2 <= sum(s.startswith("hc") for s in info["test"]) <= 3
        tested += info["test"]
        parts = partition(list(SUBJECTS), list(SUBJECTS), info, "all subjects")
        assert sum(len(v) for v in parts.values()) == 35
    assert sorted(tested) == sorted(SUBJECTS)


def test_dev_run_through_train(tmp_path: Path) -> None:
    _release(tmp_path / "release")
    prepare_hcms(tmp_path / "release", tmp_path / "data" / "hcms")
    split = write_split(tmp_path / "toy.json", ["hc01"], ["hc09"], ["ms13"])
    metrics = fast_dev_run(tmp_path / "run", "hcms", tmp_path / "data", split, "layers",
                           "trainer.max_epochs=1")  # fmt: skip
    assert 0.0 <= metrics["test/dice"] <= 1.0 and "test/dice/RPE" in metrics
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert not math.isnan(report["dataset"]["dice"])
