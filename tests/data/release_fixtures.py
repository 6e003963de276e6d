"""Helpers of the release-parser tests: tiny files in the official formats, written in code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openpyxl
from PIL import Image

_MET = {np.dtype(np.uint8): "MET_UCHAR", np.dtype(np.uint16): "MET_USHORT"}


def write_mhd(mhd: Path, volume: np.ndarray, spacing_xyz_mm: Sequence[float]) -> Path:
    """Writes ``volume`` (numpy z, y, x) as a MetaImage header plus ``.raw``, as RETOUCH does."""
    z, y, x = volume.shape
    mhd.parent.mkdir(parents=True, exist_ok=True)
    mhd.write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "CompressedData = False\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\n"
        "CenterOfRotation = 0 0 0\nAnatomicalOrientation = RAI\n"
        f"ElementSpacing = {' '.join(str(s) for s in spacing_xyz_mm)}\n"
        f"DimSize = {x} {y} {z}\nElementType = {_MET[volume.dtype]}\n"
        f"ElementDataFile = {mhd.stem}.raw\n"
    )
    mhd.with_suffix(".raw").write_bytes(
        np.ascontiguousarray(volume).astype("<" + volume.dtype.str[1:]).tobytes()
    )
    return mhd


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Writes an array as PNG (``mode`` e.g. ``"P"`` for a palette image of grey levels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    img.save(path)
    return path


#: (rows, columns) of the generated GOALS images.
GOALS_SHAPE = (20, 28)


def goals_mask() -> np.ndarray:
    """A GOALS ``Layer_Masks`` PNG's values: 255 elsewhere, 0 RNFL, 80 GCIPL, 160 choroid."""
    mask = np.full(GOALS_SHAPE, 255, np.uint8)
    mask[3:6], mask[6:9], mask[13:17] = 0, 80, 160
    return mask


def write_goals_release(root: Path, n: int = 6, sheet: bool = True, masks: bool = True) -> Path:
    """``GOALS2022-Train/Train`` with ``n`` RGB-grey images, their masks (``masks``), the
    ``Layer_show`` overlays and ``Train_GC_GT.xlsx`` (``sheet``); returns ``root``."""
    train = root / "GOALS2022-Train" / "Train"
    for i in range(1, n + 1):
        grey = np.random.default_rng(i).integers(0, 256, GOALS_SHAPE, dtype=np.uint8)
        write_png(train / "Image" / f"{i:04d}.png", np.stack([grey] * 3, -1))
        if masks:
            write_png(train / "Layer_Masks" / f"{i:04d}.png", goals_mask())
        write_png(train / "Layer_show" / f"{i:04d}.png", np.zeros((*GOALS_SHAPE, 3), np.uint8))
    if sheet:
        book = openpyxl.Workbook()
        book.active.append(["ImgName", "GC_Label"])
        for i in range(1, n + 1):
            book.active.append([i, i % 2])
        book.save(train / "Train_GC_GT.xlsx")
    return root
