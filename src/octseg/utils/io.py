"""Atomic file writes: a crash mid-write never leaves a truncated result file behind."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_npy",
    "atomic_write_png",
    "atomic_write_text",
]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path``, fsyncs it, then renames it over
    ``path`` (atomic on POSIX). Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically writes UTF-8 text to ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays/scalars and torch tensors
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically writes ``obj`` as indented JSON; NaN and inf are written as JSON ``NaN`` /
    ``Infinity`` (Python's json reads them back)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_csv(
    path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]
) -> Path:
    """Atomically writes ``rows`` (dicts) as CSV with the given column order."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return atomic_write_text(path, buf.getvalue())


def atomic_write_png(
    path: str | os.PathLike, array: Any, palette: Any = None, compress_level: int = 6
) -> Path:
    """Atomically writes a 2-D (grey, 8 or 16 bit) or RGB array as a lossless PNG.

    Args:
        path: the file.
        array: ``[H, W]`` or ``[H, W, 3]``.
        palette: optional uint8 RGB colours ``[N, 3]`` (N <= 256) for a 2-D uint8 array: the
            PNG is then a palette image whose pixel values are the array's values (label maps
            that viewers show in colour); values beyond the palette show black.
        compress_level: zlib level 0-9 (PIL's default 6; 1 is several times faster for images
            that are only viewed).
    """
    import numpy as np
    from PIL import Image

    array = np.ascontiguousarray(array)
    if palette is None:
        img = Image.fromarray(array)
    else:
        colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        if array.ndim != 2 or array.dtype != np.uint8 or len(colours) > 256:
            raise ValueError(
                f"A palette PNG needs a 2-D uint8 array and at most 256 colours, got "
                f"{array.dtype} {array.shape} and {len(colours)} colours ({path})."
            )
        # The values themselves become palette indices.
        img = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        full = np.zeros((256, 3), np.uint8)
        full[: len(colours)] = colours
        img.putpalette(full.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_npy(path: str | os.PathLike, array: Any) -> Path:
    """Atomically writes an array as ``.npy``."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return atomic_write_bytes(path, buf.getvalue())
