"""Reading label maps: damaged files are named, odd extensions are accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from octseg.evaluation.label_maps import load_prediction_folders, read_label_map


def test_damaged_files_raise_an_error_that_names_them(tmp_path: Path) -> None:
    png = tmp_path / "scan_00.png"
    buf = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf)
    png.write_bytes(buf.read_bytes()[:30])  # truncated PNG
    with pytest.raises(ValueError, match="scan_00.png could not be read as a label map"):
        read_label_map(png)
    npy = tmp_path / "scan_01.npy"
    npy.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="scan_01.npy could not be read as a label map"):
        read_label_map(npy)
    rgb = tmp_path / "scan_02.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match="scan_02.png: label PNGs must be single-channel"):
        read_label_map(rgb)


def test_upper_case_extensions_are_paired(tmp_path: Path) -> None:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    labels = np.zeros((6, 5), np.uint8)
    labels[3:] = 1
    Image.fromarray(labels).save(gt / "vol_00.PNG")
    np.save(pred / "vol_00.npy", labels.astype(np.int64))
    (scan,) = load_prediction_folders(pred, gt, num_classes=2)
    assert scan.case_id == "vol_00" and scan.volume_id == "vol"
    np.testing.assert_array_equal(scan.pred, scan.target)
