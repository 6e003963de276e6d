"""Topcon ``.fda`` volumes (3D OCT-1000/2000, Triton exports): B-scans and spacing.

Written by hand because the only maintained reader cannot run here: oct-converter (0.6.2 and
0.7.0, which eyepy's ``import_topcon_fda`` wraps) parses every chunk with ``np.fromstring`` in
binary mode, which NumPy 2.3 removed (NumPy 2.4, our pin, raises ``ValueError: The binary mode of
fromstring is removed``), and it requires opencv-python, which clashes with our
opencv-python-headless. The layout follows the public description of the format (uocte wiki,
"Topcon File Format"; the field names oct-converter uses):

- a 15-byte header: ``FOCT``, ``FDA`` (macula fixation) or ``FAA`` (external fixation), two
  uint32 version numbers;
- then chunks until a zero name length or the end of the file: uint8 name length, the name
  (``@IMG_JPEG``, ``@PARAM_SCAN_04``, ...), uint32 payload size, the payload;
- ``@IMG_JPEG``: uint8 scan mode, two uint32 unknowns, uint32 width, height and number of
  B-scans, one uint32 unknown, then per B-scan an int32 size and a JPEG 2000 code stream
  (8-bit; decoded by Pillow's OpenJPEG);
- ``@IMG_MOT_COMP_03`` (motion-corrected, uncompressed): uint8 scan mode, uint32 width, height,
  bits per pixel and number of B-scans, uint8 format, uint32 size, then uint16 pixels, B-scan by
  B-scan, row by row;
- ``@PARAM_SCAN_04``: uint32 fixation, mirror position, polarisation, then float64 scan width
  (mm), scan height (mm, the span of the B-scans) and axial resolution (um);
  ``@PARAM_SCAN_02`` (older files) the same three float64 after a uint8 and five uint32.

All little-endian. Spacing as eyepy computes it for ``.fda``: lateral = width / (A-scans - 1),
between B-scans = height / (B-scans - 1), axial = the resolution. Not read: laterality
(``@CAPTURE_INFO``), Topcon's own segmentation (``@CONTOUR_INFO``), the fundus image. Tested on
files the tests write from this description; no real ``.fda`` was available.
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import numpy as np

__all__ = ["FDA_VOLUME_CHUNKS", "read_fda_chunks", "read_topcon_fda"]

_HEADER = struct.Struct("<4s3sII")
_JPEG_HEADER = struct.Struct("<BIIIIII")
_MOT_COMP_HEADER = struct.Struct("<BIIIIBI")
_PARAM_SCAN = {
    b"@PARAM_SCAN_04": struct.Struct("<IIIddd"),
    b"@PARAM_SCAN_02": struct.Struct("<BIIIIIddd"),
}
#: chunks holding the B-scans, in the order they are looked for.
FDA_VOLUME_CHUNKS = (b"@IMG_JPEG", b"@IMG_MOT_COMP_03")


class _Truncated(ValueError):
    pass


def _take(data: bytes, offset: int, size: int, what: str) -> bytes:
    if offset + size > len(data):
        raise _Truncated(
            f"truncated in {what}: needs {size} bytes at offset {offset}, the file holds "
            f"{len(data)}"
        )
    return data[offset : offset + size]


def read_fda_chunks(data: bytes) -> tuple[str, dict[bytes, bytes]]:
    """The file type (``FDA``/``FAA``) and the chunks (name -> payload; first one kept).

    Raises:
        ValueError: if the header is not Topcon's or a chunk is cut off.
    """
    code, kind, _, _ = _HEADER.unpack(_take(data, 0, _HEADER.size, "the header"))
    if code != b"FOCT" or kind not in (b"FDA", b"FAA"):
        raise ValueError(f"header {code + kind!r} is not a Topcon FOCT/FDA or FOCT/FAA file")
    chunks: dict[bytes, bytes] = {}
    offset = _HEADER.size
    while offset < len(data):
        (name_size,) = struct.unpack("<B", _take(data, offset, 1, "a chunk name length"))
        if name_size == 0:
            break
        name = _take(data, offset + 1, name_size, "a chunk name")
        offset += 1 + name_size
        (size,) = struct.unpack("<I", _take(data, offset, 4, f"the size of chunk {name!r}"))
        chunks.setdefault(name, _take(data, offset + 4, size, f"chunk {name!r}"))
        offset += 4 + size
    return kind.decode(), chunks


def _jpeg_bscans(payload: bytes) -> np.ndarray:
    from PIL import Image

    _, _, _, width, height, count, _ = _JPEG_HEADER.unpack(
        _take(payload, 0, _JPEG_HEADER.size, "the @IMG_JPEG header")
    )
    offset, bscans = _JPEG_HEADER.size, []
    for k in range(count):
        (size,) = struct.unpack("<i", _take(payload, offset, 4, f"the size of B-scan {k}"))
        code = _take(payload, offset + 4, size, f"B-scan {k}")
        offset += 4 + size
        with Image.open(io.BytesIO(code)) as image:
            bscan = np.asarray(image)
        if bscan.shape != (height, width):
            raise ValueError(
                f"B-scan {k} decodes to {bscan.shape}, the @IMG_JPEG header says "
                f"{(height, width)}"
            )
        bscans.append(bscan)
    return np.stack(bscans) if bscans else np.zeros((0, height, width), np.uint8)


def _mot_comp_bscans(payload: bytes) -> np.ndarray:
    _, width, height, bits, count, _, _ = _MOT_COMP_HEADER.unpack(
        _take(payload, 0, _MOT_COMP_HEADER.size, "the @IMG_MOT_COMP_03 header")
    )
    if bits != 16:
        raise ValueError(f"@IMG_MOT_COMP_03 with {bits} bits per pixel; expected 16")
    size = width * height * count * 2
    pixels = _take(payload, _MOT_COMP_HEADER.size, size, "the @IMG_MOT_COMP_03 pixels")
    return np.frombuffer(pixels, dtype="<u2").reshape(count, height, width).copy()


def _spacing_um(chunks: dict[bytes, bytes], bscans: np.ndarray) -> tuple[float, float, float]:
    for name, layout in _PARAM_SCAN.items():
        if name in chunks:
            values = layout.unpack(_take(chunks[name], 0, layout.size, f"chunk {name!r}"))
            width_mm, height_mm, axial_um = values[-3:]
            break
    else:
        return (math.nan, math.nan, math.nan)
    n, _, w = bscans.shape

    def per_pixel(extent_um: float, count: int) -> float:
        value = extent_um / (count - 1) if count > 1 else math.nan
        return value if math.isfinite(value) and value > 0 else math.nan

    axial = axial_um if math.isfinite(axial_um) and axial_um > 0 else math.nan
    return (axial, per_pixel(width_mm * 1000.0, w), per_pixel(height_mm * 1000.0, n))


def read_topcon_fda(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """B-scans ``[N, H, W]`` as stored (uint8 from ``@IMG_JPEG``, uint16 from
    ``@IMG_MOT_COMP_03``), spacing ``(axial, lateral, between B-scans)`` in um (NaN where the
    file holds no ``@PARAM_SCAN`` chunk) and the file type (``FDA``/``FAA``).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, if it is not a Topcon file, is truncated, or holds no
            B-scan chunk.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        kind, chunks = read_fda_chunks(data)
        for name, decode in zip(FDA_VOLUME_CHUNKS, (_jpeg_bscans, _mot_comp_bscans), strict=True):
            if name in chunks:
                bscans = decode(chunks[name])
                break
        else:
            found = ", ".join(c.decode(errors="replace") for c in chunks) or "none"
            raise ValueError(
                f"no B-scan chunk ({' or '.join(c.decode() for c in FDA_VOLUME_CHUNKS)}); "
                f"chunks found: {found}"
            )
        if bscans.shape[0] == 0:
            raise ValueError("the B-scan chunk holds 0 B-scans")
        spacing = _spacing_um(chunks, bscans)
    except (ValueError, struct.error, OSError) as err:
        raise ValueError(
            f"{path} could not be read as a Topcon .fda file: {err}. Re-export it from the "
            "device software."
        ) from err
    return bscans, spacing, kind
