"""Reading new scans for prediction: formats, channels, volumes, vendor files and warnings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from octseg.evaluation.predict_inputs import (
    InputScans,
    TrainingFacts,
    find_inputs,
    input_warnings,
    read_input,
    to_channels,
    to_records,
)
from tests.conftest import SHARED_DIR
from tests.data.fda_fixtures import write_fda

FIXTURES = SHARED_DIR / "datasets" / "fixtures"
DUKE_LIKE = TrainingFacts("duke", (3.87, 11.3), mean=0.179, std=0.211)


def _scan(rng: np.random.Generator, shape, high: int, dtype) -> np.ndarray:
    return (rng.random(shape) * high).astype(dtype)


def test_images_of_every_format_are_read_at_their_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey8 = _scan(rng, (37, 53), 255, np.uint8)
    grey16 = _scan(rng, (41, 29), 65535, np.uint16)
    Image.fromarray(grey8).save(tmp_path / "a.png")
    Image.fromarray(grey16).save(tmp_path / "b.png")
    Image.fromarray(np.repeat(grey8[..., None], 3, axis=2)).save(tmp_path / "c.tif")
    np.save(tmp_path / "d.npy", grey16)
    for name, expected in [("a.png", grey8), ("b.png", grey16), ("d.npy", grey16)]:
        scans = read_input(tmp_path / name)
        assert not scans.is_volume and len(scans.bscans) == 1
        np.testing.assert_array_equal(scans.bscans[0], expected)
        assert scans.bscans[0].dtype == expected.dtype
    rgb = read_input(tmp_path / "c.tif").bscans[0]
    assert rgb.shape == (37, 53, 3)
    np.testing.assert_array_equal(to_channels(rgb, 1, "c.tif"), grey8)  # grey saved as RGB


def test_volumes_from_multipage_tiff_and_3d_npy(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stack = _scan(rng, (4, 30, 20), 255, np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    np.save(tmp_path / "vol.npy", stack)
    for name in ("stack.tif", "vol.npy"):
        scans = read_input(tmp_path / name)
        assert scans.is_volume and len(scans.bscans) == 4
        np.testing.assert_array_equal(np.stack(scans.bscans), stack)
    records = to_records(read_input(tmp_path / "vol.npy"), 1, (3.9, 11.0, 120.0))
    assert [r.case_id for r in records] == [f"vol_{i:03d}" for i in range(4)]
    assert [r.bscan_index for r in records] == [0, 1, 2, 3]
    assert find_inputs(tmp_path) == [tmp_path / "stack.tif", tmp_path / "vol.npy"]


def test_channel_rule() -> None:
    rgb = np.zeros((4, 5, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1000, 2000, 3000
    grey = to_channels(rgb, 1, "x")
    assert grey.dtype == np.uint16 and grey.shape == (4, 5)
    assert grey[0, 0] == round(0.299 * 1000 + 0.587 * 2000 + 0.114 * 3000)
    assert to_channels(np.zeros((4, 5), np.uint8), 3, "x").shape == (4, 5, 3)
    assert to_channels(np.zeros((4, 5, 4), np.uint8), 3, "x").shape == (4, 5, 3)  # alpha dropped
    with pytest.raises(ValueError, match="x: a 3-channel image, but the network takes 2"):
        to_channels(np.zeros((4, 5, 3), np.uint8), 2, "x")


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png could not be read"):
        read_input(broken)
    np.save(tmp_path / "float.npy", np.full((8, 8), 3.5, np.float32))
    with pytest.raises(ValueError, match=r"float.npy: float image with values 3.5..3.5"):
        read_input(tmp_path / "float.npy")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt: unknown file type"):
        find_inputs(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no B-scan or volume file"):
        find_inputs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="input=.*missing: no such file"):
        find_inputs(tmp_path / "missing")


def _input(bscans: list[np.ndarray], spacing=None) -> InputScans:
    return InputScans("s", Path("scan.png"), bscans, len(bscans) > 1, spacing)


def test_warnings_say_how_the_input_differs() -> None:
    rng = np.random.default_rng(2)
    like = _input([(np.clip(rng.normal(0.18, 0.2, (50, 40)), 0, 1) * 255).astype(np.uint8)])
    assert input_warnings(like, DUKE_LIKE, (3.87, 11.3, np.nan)) == []
    bright = _input([np.full((50, 40), 200, np.uint8)])
    (message,) = input_warnings(bright, DUKE_LIKE, None)
    assert "scan.png: mean intensity 0.784" in message and "brighter" in message
    eight_in_16 = _input([np.full((50, 40), 40, np.uint16)])
    assert "values stay within 0..255" in " ".join(input_warnings(eight_in_16, DUKE_LIKE, None))
    spacing = input_warnings(like, DUKE_LIKE, (7.74, 11.3, np.nan))
    assert len(spacing) == 1 and "axial spacing 7.74 um per pixel" in spacing[0]
    assert "0.50 times as tall" in spacing[0]
    sized = TrainingFacts("synthetic", None, 0.0, 1.0, size_hw=(128, 128))
    (message,) = input_warnings(like, sized, None)
    assert "B-scans of 50 x 40 pixels while the training B-scans are 128 x 128" in message


@pytest.mark.skipif(not (FIXTURES / "heyex_vol").is_dir(), reason="vendor fixtures absent")
def test_vendor_volumes_read_through_the_shared_reader() -> None:
    vol = read_input(FIXTURES / "heyex_vol" / "test_volume.vol")
    xml = read_input(FIXTURES / "heyex_xml" / "test_volume")
    for scans in (vol, xml):
        assert scans.is_volume and len(scans.bscans) == 10
        assert scans.bscans[0].shape == (40, 50) and scans.bscans[0].dtype == np.uint8
        assert scans.spacing_um[0] == pytest.approx(3.872, abs=1e-3)
        assert scans.spacing_um[1] == pytest.approx(11.819, abs=1e-3)
        assert scans.laterality == "OD"
    assert vol.spacing_um[2] == pytest.approx(31.444, abs=1e-3)
    assert xml.name == "test_volume" and xml.kind == "heyex_xml"


def test_fda_volume_is_read_with_its_spacing(tmp_path: Path) -> None:
    bscans = np.random.default_rng(1).integers(0, 255, (3, 20, 30)).astype(np.uint8)
    scans = read_input(write_fda(tmp_path / "scan.fda", bscans, 6.0, 2.0, 2.6))
    assert scans.is_volume and scans.kind == "topcon_fda" and len(scans.bscans) == 3
    np.testing.assert_array_equal(np.stack(scans.bscans), bscans)
    assert scans.spacing_um[:2] == pytest.approx((2.6, 6000 / 29))
    assert scans.spacing_um[2] == pytest.approx(1000.0)