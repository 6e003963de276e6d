"""Helpers of the release-parser tests: tiny files in the official formats, written in code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
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
