"""OCTA-500 layer task: release layout (BMP stacks + GT_Layers 'Layer'), labels from the six
surfaces, per-subset spacing, reruns, partial releases, bad input, and a dev run."""

from __future__ import annotations

import logging
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from octseg.data.octa500 import prepare_octa500
from octseg.data.prepared import read_prepared
from tests.data.prepared_run import fast_dev_run, run_prepare_script, write_split

H, N = 24, 3  # rows, B-scans per volume
WIDTH = {10001: 10, 10002: 10, 10301: 8}
ROWS = np.array([4, 8, 11, 14, 17, 20])  # ILM, IPL, OPL, ISOS, RPE, BM


def _layers(volume: int) -> np.ndarray:
    """'Layer' (6, n_bscans, width) int; B-scan k moves every surface k rows down."""
    w = WIDTH[volume]
    return (ROWS[:, None, None] + np.arange(N)[None, :, None] + np.zeros((1, 1, w))).astype(
        np.int32
    )


def write_release(root: Path, volumes=tuple(WIDTH), label_root: str = "Label") -> Path:
    """The OCTA-500 layout: OCTA_<6|3>mm/OCT/<id>/<n>.bmp and <label_root>/GT_Layers/<id>.mat."""
    for volume in volumes:
        subset = "OCTA_6mm" if volume <= 10300 else "OCTA_3mm"
        folder = root / subset / "OCT" / str(volume)
        folder.mkdir(parents=True)
        (root / subset / "OCTA" / str(volume)).mkdir(parents=True)  # en-face data: not read
        rng = np.random.default_rng(volume)
        for n in range(1, N + 1):
            bscan = rng.integers(0, 256, (H, WIDTH[volume]), dtype=np.uint8)
            Image.fromarray(bscan).save(folder / f"{n}.bmp")
            Image.fromarray(bscan).save(root / subset / "OCTA" / str(volume) / f"{n}.bmp")
        labels = root / label_root / "GT_Layers"
        labels.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(labels / f"{volume}.mat", {"Layer": _layers(volume)})
    return root


def test_prepare_parses_labels_surfaces_and_spacing(tmp_path: Path) -> None:
    release = write_release(tmp_path / "OCTA-500")
    summary = prepare_octa500(release, tmp_path / "data" / "octa500")
    assert (summary.volumes, summary.bscans, summary.labelled_bscans) == (3, 9, 9)
    assert summary.missing[:2] == ["10003", "10004"] and "10500" in summary.missing
    volumes = {v[0].volume_id: v for v in read_prepared(tmp_path / "data" / "octa500")}
    first = volumes["10001"][1]  # 2.bmp: surfaces one row lower
    assert (first.case_id, first.bscan_index, first.image.dtype) == ("10001_001", 1, np.uint8)
    expected = np.searchsorted(ROWS + 1, np.arange(H), side="right")
    np.testing.assert_array_equal(first.mask, np.repeat(expected[:, None], 10, axis=1))
    assert set(np.unique(first.mask)) == set(range(7))
    bmp = np.array(Image.open(release / "OCTA_6mm" / "OCT" / "10001" / "2.bmp"))
    np.testing.assert_array_equal(first.image, bmp)
    rows = np.load(tmp_path / "data" / "octa500" / "volumes" / "10001" / "surfaces" /
                   "10001_001.npy")  # fmt: skip
    np.testing.assert_array_equal(rows, _layers(10001)[:, 1, :])
    assert volumes["10001"][0].spacing_um == pytest.approx((2000 / H, 600.0, 2000.0))
    assert volumes["10301"][0].spacing_um == pytest.approx((2000 / H, 375.0, 1000.0))


def test_rerun_skips_and_partial_release_warns(tmp_path: Path, caplog) -> None:
    release = write_release(tmp_path / "r", volumes=(10001, 10002), label_root="GroundTruth")
    (release / "GroundTruth" / "GT_Layers" / "10002.mat").unlink()
    out = tmp_path / "octa500"
    with caplog.at_level(logging.WARNING):
        summary = prepare_octa500(release, out)
    assert summary.volumes == 1
    assert "10002 (no GT_Layers/10002.mat)" in summary.missing
    assert "OCTA_3mm (no volume of 10301..10500)" in summary.missing
    assert "not in the release" in caplog.text
    again = prepare_octa500(release, out)
    assert (again.volumes, again.skipped_volumes) == (1, 1)
    with pytest.raises(ValueError, match="prepared with other settings"):
        prepare_octa500(release, out, bscan_step=2)
    sub = prepare_octa500(release, tmp_path / "sub", subset="6mm", bscan_step=2)
    assert sub.bscans == 2 and not any("OCTA_3mm" in m for m in sub.missing)


def test_archive_and_script(tmp_path: Path, capsys) -> None:
    release = write_release(tmp_path / "r", volumes=(10301,))
    archive = tmp_path / "OCTA-500.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(release.rglob("*")):
            z.write(path, Path("OCTA-500") / path.relative_to(release))
    assert (
        run_prepare_script("octa500", [str(archive), str(tmp_path / "o"), "--subset", "3mm"]) == 0
    )
    assert "octa500 prepared" in capsys.readouterr().out
    assert [len(v) for v in read_prepared(tmp_path / "o", "octa500")] == [N]
    assert run_prepare_script("octa500", [str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_bad_input_is_named(tmp_path: Path) -> None:
    release = write_release(tmp_path / "r", volumes=(10001,))
    with pytest.raises(FileNotFoundError, match="probably a deeper folder"):
        prepare_octa500(release / "OCTA_6mm" / "OCT", tmp_path / "o1")
    with pytest.raises(FileNotFoundError, match="pass the folder above it"):
        prepare_octa500(release / "OCTA_6mm", tmp_path / "o2")
    with pytest.raises(ValueError, match="subset must be"):
        prepare_octa500(release, tmp_path / "o3", subset="9mm")
    mat = release / "Label" / "GT_Layers" / "10001.mat"
    scipy.io.savemat(mat, {"Layers": _layers(10001)})
    with pytest.raises(
        ValueError, match=r"lacks the variable\(s\) \['Layer'\] \(it holds \['Layers'\]"
    ):
        prepare_octa500(release, tmp_path / "o4")
    scipy.io.savemat(mat, {"Layer": _layers(10001)[:, :, :-1]})
    with pytest.raises(ValueError, match=r"'Layer' is \(6, 3, 9\), expected \(6, 3, 10\)"):
        prepare_octa500(release, tmp_path / "o5")
    bad = _layers(10001)
    bad[5, 2, 4] = H + 3
    scipy.io.savemat(mat, {"Layer": bad})
    with pytest.raises(ValueError, match="B-scan 3: surface rows .* outside the image rows 0..24"):
        prepare_octa500(release, tmp_path / "o6")
    scipy.io.savemat(mat, {"Layer": _layers(10001)})
    bmp = release / "OCTA_6mm" / "OCT" / "10001" / "2.bmp"
    bmp.write_bytes(bmp.read_bytes()[:40])  # truncated download
    with pytest.raises(ValueError, match="2.bmp could not be read as an image"):
        prepare_octa500(release, tmp_path / "o7")
    bmp.unlink()
    with pytest.raises(ValueError, match=r"B-scans \[2\] are missing"):
        prepare_octa500(release, tmp_path / "o8")
    Image.fromarray(np.zeros((H + 1, 10), np.uint8)).save(bmp)
    with pytest.raises(ValueError, match=r"2.bmp is uint8 \(25, 10\); expected uint8 \(24, 10\)"):
        prepare_octa500(release, tmp_path / "o9")
    assert not (tmp_path / "o9" / "volumes" / "10001").exists()


def test_fast_dev_run_through_train(tmp_path: Path) -> None:
    release = write_release(tmp_path / "r", volumes=(10001, 10002, 10301))
    prepare_octa500(release, tmp_path / "data" / "octa500")
    split = write_split(tmp_path / "split.json", ["10001"], ["10002"], ["10301"])
    metrics = fast_dev_run(tmp_path / "run", "octa500", tmp_path / "data", split)
    assert math.isfinite(metrics["test/dice"])
    shutil.rmtree(tmp_path / "run")


@pytest.mark.parametrize(
    ("protocol", "sizes", "first_test"),
    [("official_6mm", (180, 20, 100), "10201"), ("official_3mm", (140, 10, 50), "10451"),
     ("official", (320, 30, 150), "10201")],
)  # fmt: skip
def test_official_splits_follow_the_id_ranges(protocol: str, sizes, first_test: str) -> None:
    from octseg.data.splits import load_split
    from tests.conftest import REPO_ROOT

    info = load_split(protocol, 0, REPO_ROOT / "splits" / "octa500")
    assert tuple(len(info[p]) for p in ("train", "val", "test")) == sizes
    assert info["test"][0] == first_test and info["unit"] == "subject"
