"""Reading releases (folder or zip, MATLAB files with named errors) and rasterising surfaces."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from octseg.data.layer_labels import surfaces_to_labels
from octseg.data.release import Release, grey_array, load_mat


def test_folder_and_archive_list_the_same_files_without_macos_forks(tmp_path: Path) -> None:
    (tmp_path / "r" / "a").mkdir(parents=True)
    scipy.io.savemat(tmp_path / "r" / "a" / "x.mat", {"images": np.ones((2, 3), np.uint8)})
    (tmp_path / "r" / "a" / "._x.mat").write_bytes(b"fork")
    with zipfile.ZipFile(tmp_path / "r.zip", "w") as z:
        z.write(tmp_path / "r" / "a" / "x.mat", "a/x.mat")
        z.writestr("__MACOSX/a/._x.mat", b"fork")
    for source in (tmp_path / "r", tmp_path / "r.zip"):
        release = Release(source, "a test release")
        assert release.names == ["a/x.mat"]
        assert load_mat(release, "a/x.mat", ["images"], "images")["images"].shape == (2, 3)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file but not a zip archive"):
        Release(tmp_path / "file.txt", "a test release")


def test_matlab_v73_gets_a_conversion_hint(tmp_path: Path) -> None:
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: x HDF5 schema 1.00 .".ljust(116)
    (tmp_path / "v73.mat").write_bytes(header + b"\x00" * 8 + b"\x00\x02IM" + b"\x00" * 512)
    release = Release(tmp_path, "a test release")
    with pytest.raises(ValueError, match=r"v73.mat is a MATLAB v7.3 \(HDF5\) file.*'-v7'"):
        load_mat(release, "v73.mat", ["images"], "images")


def test_surfaces_to_labels_regions_crossings_and_untraced_columns() -> None:
    surfaces = np.array([[2.0, 2.7, 1.0, np.nan], [4.0, 4.2, 0.0, 3.0]])  # column 2 crosses
    labels, raised = surfaces_to_labels(surfaces, height=6, ignore_index=255)
    np.testing.assert_array_equal(labels[:, 0], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(labels[:, 1], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(labels[:, 2], [0, 2, 2, 2, 2, 2])  # raised: zero thickness
    assert (labels[:, 3] == 255).all() and raised == 1
    with pytest.raises(ValueError, match=r"scan 7: surface rows 0.0..9.0 lie outside"):
        surfaces_to_labels(np.array([[0.0, 9.0]]), height=6, where="scan 7")


def test_folders_are_walked_alike_in_a_folder_and_an_archive(tmp_path: Path) -> None:
    for name in ("out/a/TRAIN001/oct.mhd", "out/b/TRAIN001/oct.mhd", "out/c/x/TRAIN002/oct.mhd"):
        (tmp_path / "r" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "r" / name).write_text("h")
    with zipfile.ZipFile(tmp_path / "r.zip", "w") as z:  # no folder entries, as some zips
        for path in sorted((tmp_path / "r").rglob("*.mhd")):
            z.write(path, path.relative_to(tmp_path / "r").as_posix())
    for source in (tmp_path / "r", tmp_path / "r.zip"):
        with Release(source, "a test release") as release:
            assert release.children("out") == ["out/a", "out/b", "out/c"]
            assert release.is_dir("out/c/x") and not release.is_dir("out/a/TRAIN001/oct.mhd")
            assert release.exists("out/a/TRAIN001/oct.mhd") and not release.exists("out/d")

            def volume(folder: str) -> str | None:
                return release.basename(folder) if "TRAIN" in folder else None

            with pytest.raises(ValueError, match="TRAIN001 found twice"):
                release.find_folders(volume, 3, "volume", "TRAINnnn/")

            def second(folder: str) -> str | None:
                return "2" if folder.endswith("TRAIN002") else None

            with pytest.raises(ValueError, match="No volume within 3 folder levels"):
                release.find_folders(second, 3, "volume", "TRAINnnn/")
            assert release.find_folders(second, 4, "volume", "-") == {"2": "out/c/x/TRAIN002"}
            with release.local_path("out/a/TRAIN001/oct.mhd") as path:
                assert path.read_text() == "h"


def test_grey_array_keeps_grey_and_refuses_or_blends_colour() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = Image.fromarray(np.stack([grey] * 3, -1))
    np.testing.assert_array_equal(grey_array(rgb, "x.png"), grey)
    np.testing.assert_array_equal(grey_array(Image.fromarray(grey).convert("P"), "x.png"), grey)
    deep = np.array([[0, 40000]], np.uint16)
    assert grey_array(Image.fromarray(deep), "x.png").dtype == np.uint16
    colour = np.zeros((3, 4, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    with pytest.raises(ValueError, match="x.png is a colour image"):
        grey_array(Image.fromarray(colour), "x.png")
    assert grey_array(Image.fromarray(colour), "x.png", colour="luma")[0, 0] == 76
