"""Writes tiny Heidelberg ``.vol`` files with the documented layout (file header, SLO image,
per-B-scan headers with their own size, float32 B-scans), for parser tests."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_vol(
    path: Path,
    bscans: np.ndarray,
    scale_x_mm: float = 0.0058,
    distance_mm: float = 0.123,
    scale_y_mm: float = 0.0039,
    laterality: str = "OD",
    layers: np.ndarray | None = None,
) -> Path:
    """Writes ``bscans`` ``[N, H, W]`` float32 as a ``.vol``; ``layers`` ``[N, S, W]`` rows.

    The file header states 61440 bytes per B-scan header while each B-scan header states its
    real size, as in the files eyepy writes and the files that trap naive readers.
    """
    n, h, w = bscans.shape
    slo = np.zeros((8, 8), np.uint8)
    header = struct.pack(
        "<12s3I3d2I2dId4sQiI16s16sI24sdI24sd4I34s",
        b"HSF-OCT-103 ", w, n, h, scale_x_mm, distance_mm, scale_y_mm, 8, 8, 0.03, 0.03, 30,
        0.0, laterality.encode(), 0, 3, 61440, b"1", b"", 0, b"test", 0.0, 0, b"", 0.0,
        0, 0, 0, 0, b"",
    )  # fmt: skip
    parts = [header.ljust(2048, b"\0"), slo.tobytes()]
    n_seg = 0 if layers is None else layers.shape[1]
    hdr_size = 256 + 4 * n_seg * w + 64
    for k in range(n):
        bscan_hdr = struct.pack(
            "<12sI4d2If I6f", b"HSF-BS-103  ", hdr_size, 0.0, k * distance_mm, w * scale_x_mm,
            k * distance_mm, n_seg, 256, 30.0, 0, *([0.0] * 6),
        )  # fmt: skip
        seg = b"" if layers is None else np.asarray(layers[k], "<f4").tobytes()
        parts.append((bscan_hdr.ljust(256, b"\0") + seg).ljust(hdr_size, b"\0"))
        parts.append(np.asarray(bscans[k], "<f4").tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(parts))
    return path
