"""Topcon .fda reading on files written from the documented layout: B-scans, spacing, the file
type, both B-scan chunks, and errors naming the file for truncated or foreign files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from octseg.data.topcon_fda import read_topcon_fda
from octseg.data.vendor import read_vendor
from tests.data.fda_fixtures import chunk, write_fda


def _bscans(dtype: type = np.uint8, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, np.iinfo(dtype).max, (n, 24, 33)).astype(dtype)


@pytest.mark.parametrize("motion_corrected", [False, True])
def test_bscans_and_spacing_are_read(tmp_path: Path, motion_corrected: bool) -> None:
    dtype = np.uint16 if motion_corrected else np.uint8
    bscans = _bscans(dtype)
    path = write_fda(tmp_path / "scan.fda", bscans, 6.0, 3.0, 2.6, motion_corrected)
    read, spacing, kind = read_topcon_fda(path)
    np.testing.assert_array_equal(read, bscans)  # lossless JPEG 2000 / raw uint16
    assert read.dtype == dtype and kind == "FDA"
    # Lateral 6 mm over 33 A-scans, 3 mm over 4 B-scans (n - 1 intervals, as eyepy).
    assert spacing == pytest.approx((2.6, 6000 / 32, 3000 / 3))


def test_read_vendor_dispatches_fda(tmp_path: Path) -> None:
    path = write_fda(tmp_path / "SCAN.FDA", _bscans(n=1), kind=b"FAA")
    volume = read_vendor(path)
    assert volume.format == "topcon_fda" and volume.bscans.shape == (1, 24, 33)
    assert volume.meta == {"fda_type": "FAA"} and volume.laterality is None
    assert math.isnan(volume.spacing_um[2])  # a line scan has no B-scan spacing


def test_spacing_is_nan_without_scan_parameters(tmp_path: Path) -> None:
    full = write_fda(tmp_path / "a.fda", _bscans()).read_bytes()
    cut = full.index(b"\x0e@PARAM_SCAN_04")
    (tmp_path / "b.fda").write_bytes(full[:cut] + b"\x00")
    bscans, spacing, _ = read_topcon_fda(tmp_path / "b.fda")
    assert bscans.shape == (4, 24, 33) and all(math.isnan(s) for s in spacing)


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    full = write_fda(tmp_path / "a.fda", _bscans()).read_bytes()
    (tmp_path / "cut.fda").write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match=r"cut.fda could not be read as a Topcon .fda.*truncated"):
        read_vendor(tmp_path / "cut.fda")
    (tmp_path / "other.fda").write_bytes(b"HSF-OCT-103 " + b"\x00" * 40)
    with pytest.raises(ValueError, match="other.fda.*not a Topcon FOCT"):
        read_vendor(tmp_path / "other.fda")
    header = full[:15]
    (tmp_path / "empty.fda").write_bytes(header + chunk(b"@HW_INFO_03", b"\x00" * 8))
    with pytest.raises(ValueError, match=r"empty.fda.*no B-scan chunk.*found: @HW_INFO_03"):
        read_vendor(tmp_path / "empty.fda")
    with pytest.raises(FileNotFoundError):
        read_vendor(tmp_path / "missing.fda", format="topcon_fda")
