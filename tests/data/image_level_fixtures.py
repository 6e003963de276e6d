"""Tiny image-level releases (JPEG B-scans in class folders) written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg(path: Path, seed: int, shape: tuple[int, int] = (24, 20)) -> None:
    """A grey JPEG B-scan of ``shape`` (rows, columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, quality=95)


def write_release(root: Path, files: list[str]) -> Path:
    """Writes ``files`` (paths relative to ``root``) as JPEGs; returns ``root``."""
    for i, name in enumerate(files):
        write_jpeg(root / name, i, (24, 20 + 2 * (i % 3)))
    return root
