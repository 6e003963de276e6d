"""Writes tiny Topcon ``.fda`` files with the documented chunk layout (see
:mod:`octseg.data.topcon_fda`), for reader tests: a header, unrelated chunks around the ones
read, JPEG 2000 (lossless) or uint16 motion-corrected B-scans and a scan-parameter chunk."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def chunk(name: bytes, payload: bytes) -> bytes:
    return struct.pack("<B", len(name)) + name + struct.pack("<I", len(payload)) + payload


def jpeg_chunk(bscans: np.ndarray) -> bytes:
    n, h, w = bscans.shape
    payload = struct.pack("<BIIIIII", 3, 0, 0, w, h, n, 0)
    for bscan in bscans:
        buf = io.BytesIO()
        Image.fromarray(bscan).save(buf, format="JPEG2000", irreversible=False, no_jp2=True)
        payload += struct.pack("<i", len(buf.getvalue())) + buf.getvalue()
    return chunk(b"@IMG_JPEG", payload)


def mot_comp_chunk(bscans: np.ndarray) -> bytes:
    n, h, w = bscans.shape
    pixels = np.ascontiguousarray(bscans, dtype="<u2").tobytes()
    header = struct.pack("<BIIIIBI", 3, w, h, 16, n, 0, len(pixels))
    return chunk(b"@IMG_MOT_COMP_03", header + pixels)


def param_scan_04(width_mm: float, height_mm: float, axial_um: float) -> bytes:
    payload = struct.pack("<IIIddddd", 0, 0, 0, width_mm, height_mm, axial_um, 0.0, 0.0)
    return chunk(b"@PARAM_SCAN_04", payload + b"\x00\x01")


def write_fda(
    path: Path,
    bscans: np.ndarray,
    width_mm: float = 6.0,
    height_mm: float = 6.0,
    axial_um: float = 2.6,
    motion_corrected: bool = False,
    kind: bytes = b"FDA",
) -> Path:
    """Writes ``bscans`` ``[N, H, W]`` (uint8 as JPEG 2000, or uint16 motion-corrected)."""
    body = chunk(b"@FDA_FILE_INFO", struct.pack("<II", 1, 1))
    body += mot_comp_chunk(bscans) if motion_corrected else jpeg_chunk(bscans)
    body += chunk(b"@CAPTURE_INFO_02", b"\x00" * 16) + param_scan_04(width_mm, height_mm, axial_um)
    path.write_bytes(struct.pack("<4s3sII", b"FOCT", kind, 1, 3) + body + b"\x00")
    return path
