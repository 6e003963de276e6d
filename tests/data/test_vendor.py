"""Vendor files through eyepy: the real .vol and HEYEX XML fixtures (header spacing, shapes,
the per-B-scan header size), dispatch, corrupt files, intensity mapping, no network."""

from __future__ import annotations

import gc
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from octseg.data.vendor import read_vendor, to_display, vendor_format
from tests.conftest import SHARED_DIR

FIXTURES = SHARED_DIR / "datasets" / "fixtures"
VOL = FIXTURES / "heyex_vol" / "test_volume.vol"
XML_DIR = FIXTURES / "heyex_xml" / "test_volume"
requires_vol = pytest.mark.skipif(not VOL.is_file(), reason=f"fixture {VOL} absent")
requires_xml = pytest.mark.skipif(not XML_DIR.is_dir(), reason=f"fixture {XML_DIR} absent")


@requires_vol
def test_vol_fixture_spacing_shape_and_laterality_from_the_header() -> None:
    volume = read_vendor(VOL)
    assert volume.format == "heyex_vol" and volume.laterality == "OD"
    assert volume.bscans.shape == (10, 40, 50) and volume.bscans.dtype == np.float32
    assert volume.spacing_um == pytest.approx((3.872, 11.819, 31.444), abs=1e-3)
    assert volume.surfaces == {}  # num_seg 0: no layer lines in this file
    assert volume.meta["bscan_positions_mm"][0] == [[1.513, 6.807], [7.564, 6.807]]


@requires_vol
def test_no_eyepy_object_outlives_a_read() -> None:
    # eyepy's objects refer to each other; left to the cyclic collector they would keep the
    # parsed file alive while a preparation reads the next volume (two volumes in memory).
    def eyepy_objects() -> int:
        return sum(str(type(o).__module__).startswith("eyepy.") for o in gc.get_objects())

    read_vendor(VOL)  # imports eyepy and builds its format definitions
    gc.collect()
    before = eyepy_objects()
    gc.disable()  # only read_vendor's own collection may free them
    try:
        volume = read_vendor(VOL)
        after = eyepy_objects()
    finally:
        gc.enable()
    assert volume.bscans.shape == (10, 40, 50) and after == before


@requires_vol
def test_vol_bscans_sit_after_the_per_bscan_header_not_the_file_header_size() -> None:
    """The file header says 61440 bytes per B-scan header, the B-scans use 3656: only the
    per-B-scan value puts the pixels where they are (and adds up to the file size)."""
    raw = VOL.read_bytes()
    size_x, n_bscans, size_y = struct.unpack_from("<3I", raw, 12)
    file_hdr_size = struct.unpack_from("<I", raw, 100)[0]
    slo_w, slo_h = struct.unpack_from("<2I", raw, 48)
    first = 2048 + slo_w * slo_h
    bscan_hdr_size = struct.unpack_from("<I", raw, first + 12)[0]
    assert (file_hdr_size, bscan_hdr_size) == (61440, 3656)
    assert len(raw) == first + n_bscans * (bscan_hdr_size + 4 * size_x * size_y)
    volume = read_vendor(VOL)
    for k in (0, n_bscans - 1):
        start = first + k * (bscan_hdr_size + 4 * size_x * size_y) + bscan_hdr_size
        expected = np.frombuffer(raw, "<f4", size_x * size_y, start).reshape(size_y, size_x)
        np.testing.assert_array_equal(volume.bscans[k], expected)


@requires_xml
def test_xml_export_folder_and_file_read_the_same_volume() -> None:
    by_folder = read_vendor(XML_DIR)
    by_file = read_vendor(XML_DIR / "test_dummy.xml")
    assert by_folder.format == by_file.format == "heyex_xml"
    assert by_folder.bscans.shape == (10, 40, 50) and by_folder.bscans.dtype == np.uint8
    np.testing.assert_array_equal(by_folder.bscans, by_file.bscans)
    assert by_folder.spacing_um[:2] == pytest.approx((3.872, 11.819), abs=1e-3)
    assert by_folder.spacing_um[2] == pytest.approx(31.444, abs=1e-2)  # from B-scan positions
    assert by_folder.laterality == "OD"  # XML says "R"
    ilm = by_folder.surfaces["ILM"]
    assert ilm.shape == (10, 50) and np.isnan(ilm[0, 0]) and ilm[0, 2] == pytest.approx(9.6)


def test_dispatch_by_suffix_and_folder(tmp_path: Path) -> None:
    for name, fmt in [("a.vol", "heyex_vol"), ("b.E2E", "heyex_e2e"), ("c.fda", "topcon_fda"),
                      ("d.xml", "heyex_xml")]:  # fmt: skip
        (tmp_path / name).write_bytes(b"x")
        assert vendor_format(tmp_path / name) == fmt
    (tmp_path / "e.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown vendor file type '\.png'"):
        vendor_format(tmp_path / "e.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vendor_format(tmp_path / "missing.vol")
    export = tmp_path / "export"
    export.mkdir()
    with pytest.raises(ValueError, match="holding 0 .xml files"):
        vendor_format(export)
    (export / "scan.xml").write_text("<HEDX/>")
    assert vendor_format(export) == "heyex_xml"


@pytest.mark.parametrize("suffix", [".vol", ".e2e", ".xml"])
def test_corrupt_files_raise_an_error_naming_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"HSF-OCT-103 " + bytes(100))
    with pytest.raises(ValueError, match=rf"broken\{suffix} could not be read as heyex_"):
        read_vendor(path)


@requires_vol
def test_truncated_vol_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.vol"
    path.write_bytes(VOL.read_bytes()[:-100])
    with pytest.raises(ValueError, match="cut.vol could not be read as heyex_vol"):
        read_vendor(path)


def test_display_mappings() -> None:
    data = np.array([[0.0, 1.0, 0.0625, 1.5, np.finfo(np.float32).max]], np.float32)
    root = to_display(data, "root")
    assert root.dtype == np.uint8 and root.tolist() == [[0, 255, 128, 0, 0]]
    log = to_display(data, "log")
    expected = np.clip((np.log(np.array([0.0, 1.0, 0.0625]) + 2.44e-4) + 8.3) / 8.285, 0, 1)
    assert log[0, :3].tolist() == np.round(expected * 255).astype(int).tolist()
    assert log[0, 3] == 255 and log[0, 4] == 0  # above 1: clipped; the 3.4e38 sentinel: 0
    stored = np.arange(6, dtype=np.uint16).reshape(2, 3)
    assert to_display(stored) is stored
    with pytest.raises(ValueError, match="Intensity mapping 'gamma'"):
        to_display(data, "gamma")


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 2, 4, 6)])
def test_display_mapping_of_a_volume_is_that_of_each_bscan(shape: tuple[int, ...]) -> None:
    data = np.random.default_rng(0).gamma(0.5, 0.05, shape).astype(np.float32)
    data.flat[::11] = np.finfo(np.float32).max  # no-data sentinel
    volume = to_display(data, "log")
    assert volume.shape == shape and volume.dtype == np.uint8
    for index in np.ndindex(shape[:-2]):
        assert np.array_equal(volume[index], to_display(data[index], "log"))
    assert len(np.unique(volume)) > 20  # not a constant image


@requires_vol
def test_reading_a_vendor_file_opens_no_connection() -> None:
    script = f"""
import socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network refused in test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
import eyepy, eyepy.io
from octseg.data.vendor import read_vendor
read_vendor({str(VOL)!r})
print("attempts", len(attempts))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "attempts 0" in out.stdout
    assert not math.isnan(read_vendor(VOL).spacing_um[2])
