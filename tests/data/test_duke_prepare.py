"""scripts/prepare_duke.py and octseg.data.duke_prepare on small .mat fixtures."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from octseg.data.duke_prepare import MARKER_NAME, prepare_duke, rasterise_bscan
from tests.data.duke_fixtures import (
    BASE_ROWS,
    COLS,
    CROSS_AT,
    FLUID_BOX,
    NAN_AT,
    TRACED,
    H,
    W,
    write_release,
)

REPO = Path(__file__).resolve().parents[2]


def expected_column(col: int, shift: float = 0.0) -> np.ndarray:
    """Labels of one fixture column (B-scan 1): region k spans [b_{k-1}, b_k)."""
    rows = np.floor(BASE_ROWS + col % 3 + 0.4 + shift)
    return (np.arange(H)[:, None] >= rows[None, :]).sum(axis=1)


def read(out: Path, sub: str, name: str) -> np.ndarray:
    if sub == "boundaries":
        return np.load(out / sub / f"{name}.npy")
    return np.array(Image.open(out / sub / f"{name}.png"))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_release(tmp_path_factory.mktemp("release") / "2015_BOE_Chiu")


def test_crop_mode_grader1_labels_boundaries_and_summary(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "duke_dme"
    summary = prepare_duke(release, out, grader=1, mode="crop")
    start, stop = COLS[1][0], max(COLS[b][1] for b in TRACED)  # union of traced columns
    assert summary.n_bscans == 10 * len(TRACED) and summary.widths == [stop - start] * 20
    assert summary.filled_nan_boundaries == 10 and summary.raised_crossings == 10
    assert summary.fluid_bscans == 10
    mask, image = read(out, "masks", "Subject_01_00"), read(out, "images", "Subject_01_00")
    assert mask.shape == image.shape == (H, stop - start)
    for col in (6, 13, 30):
        np.testing.assert_array_equal(mask[:, col - start], expected_column(col))
    # NaN boundary 3 inside a traced column: raised onto boundary 2, so label 3 is empty there.
    _, k, c = NAN_AT
    column = mask[:, c - start]
    assert not np.any(column == k) and np.all(np.diff(column.astype(int)) >= 0)
    # Crossing boundary 6 (above boundary 5): label 6 has zero thickness in that column.
    _, k, c = CROSS_AT
    assert not np.any(mask[:, c - start] == k)
    # The second traced B-scan: fluid painted over layers, untraced columns in the crop ignored.
    mask3 = read(out, "masks", "Subject_01_01")
    _, rows, cols = FLUID_BOX
    assert np.all(mask3[rows, cols.start - start : cols.stop - start] == 9)
    assert np.all(mask3[:, : COLS[3][0] - start] == 255)
    assert np.all(mask3[:, COLS[3][1] - start :] == 255)
    bounds = read(out, "boundaries", "Subject_01_01")
    assert bounds.shape == (8, stop - start) and bounds.dtype == np.float32
    assert np.isnan(bounds[:, : COLS[3][0] - start]).all()
    np.testing.assert_allclose(bounds[:, COLS[3][0] - start], BASE_ROWS + COLS[3][0] % 3 + 0.4)
    marker = json.loads((out / MARKER_NAME).read_text())
    assert (marker["grader"], marker["mode"], marker["n_bscans"]) == (1, "crop", 20)
    image_src = np.asarray(read(out, "images", "Subject_02_00"))
    assert image_src.dtype == np.uint8


def test_full_mode_and_grader2(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "full_g2"
    summary = prepare_duke(release, out, grader=2, mode="full", subjects=[1, 2])
    assert summary.widths == [W] * 4 and summary.subjects == [1, 2]
    mask = read(out, "masks", "Subject_02_00")
    assert mask.shape == (H, W)
    assert np.all(mask[:, : COLS[1][0]] == 255) and np.all(mask[:, COLS[1][1] :] == 255)
    np.testing.assert_array_equal(mask[:, 13], expected_column(13, shift=1.0))  # grader 2: +1 row
    bounds = read(out, "boundaries", "Subject_02_00")
    assert bounds.shape == (8, W) and np.isnan(bounds[:, 0]).all()


def test_idempotent_settings_guard_and_overwrite(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "duke_dme"
    prepare_duke(release, out, subjects=[3])
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = prepare_duke(release, out, subjects=[3])
    assert again.skipped and again.n_bscans == 2
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="other settings"):
        prepare_duke(release, out, subjects=[3], grader=2)
    redone = prepare_duke(release, out, subjects=[3], grader=2, overwrite=True)
    assert not redone.skipped and json.loads((out / MARKER_NAME).read_text())["grader"] == 2
    # A half-written folder (marker gone) is not mistaken for a prepared one.
    (out / MARKER_NAME).unlink()
    with pytest.raises(ValueError, match="no octseg_prepared.json"):
        prepare_duke(release, out, subjects=[3])


def test_zip_release_and_cli(release: Path, tmp_path: Path) -> None:
    archive = tmp_path / "2015_BOE_Chiu.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for mat in sorted(release.glob("*.mat")):
            zf.write(mat, f"2015_BOE_Chiu/{mat.name}")
    import importlib.util

    spec = importlib.util.spec_from_file_location("prepare_duke", REPO / "scripts/prepare_duke.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "from_zip"
    assert cli.main([str(archive), str(out), "--subjects", "4", "5"]) == 0
    assert sorted(p.name for p in (out / "masks").iterdir())[0] == "Subject_04_00.png"
    assert cli.main([str(archive), str(tmp_path / "x"), "--subjects", "11"]) == 1  # bad subject


def test_missing_subject_names_the_file(tmp_path: Path) -> None:
    source = write_release(tmp_path / "rel", subjects=[1, 2])
    with pytest.raises(FileNotFoundError, match=r"Subject_03\.mat"):
        prepare_duke(source, tmp_path / "out")


def test_mat_without_expected_fields(tmp_path: Path) -> None:
    def drop(arrays: dict) -> dict:
        return {k: v for k, v in arrays.items() if k != "manualFluid1"}

    source = write_release(tmp_path / "rel", subjects=[1], s1=drop)
    with pytest.raises(ValueError, match=r"Subject_01\.mat lacks field.*manualFluid1"):
        prepare_duke(source, tmp_path / "out", subjects=[1])


def test_size_mismatch_names_the_file(tmp_path: Path) -> None:
    def shrink(arrays: dict) -> dict:
        return {**arrays, "manualFluid1": arrays["manualFluid1"][:-4]}

    source = write_release(tmp_path / "rel", subjects=[2], s2=shrink)
    with pytest.raises(ValueError, match=r"Subject_02\.mat: sizes disagree"):
        prepare_duke(source, tmp_path / "out", subjects=[2])


def test_boundary_outside_image_names_file_and_bscan(tmp_path: Path) -> None:
    def push_out(arrays: dict) -> dict:
        arrays["manualLayers1"][7, 10, TRACED[0]] = H + 50
        return arrays

    source = write_release(tmp_path / "rel", subjects=[1], s1=push_out)
    with pytest.raises(ValueError, match=r"Subject_01\.mat, B-scan 1 .*outside the image"):
        prepare_duke(source, tmp_path / "out", subjects=[1])


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="grader"):
        prepare_duke("nowhere", "out", grader=3)
    with pytest.raises(ValueError, match="ignore_index"):
        prepare_duke("nowhere", "out", ignore_index=9)
    with pytest.raises(ValueError, match="mode"):
        prepare_duke("nowhere", "out", mode="resize")


def test_rasterise_fluid_and_untraced_columns() -> None:
    bounds = np.full((8, 3), np.nan)
    bounds[:, 1] = [1, 2, 3, 4, 5, 6, 7, 8]
    fluid = np.zeros((10, 3))
    fluid[4, 1] = 1
    mask, info = rasterise_bscan(bounds, fluid, height=10, ignore_index=200)
    np.testing.assert_array_equal(mask[:, 1], [0, 1, 2, 3, 9, 5, 6, 7, 8, 8])
    assert np.all(mask[:, [0, 2]] == 200) and info["traced"].tolist() == [False, True, False]
