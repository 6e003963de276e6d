"""Reading an official dataset release as downloaded: a folder or a ``.zip`` archive, walked the
same way, with errors that name the file at fault.

A release node is a :class:`pathlib.Path` (folder) or a :class:`zipfile.Path` (inside an
archive); both offer ``name``, ``iterdir()``, ``is_dir()``, ``is_file()``, ``/`` and
``read_bytes()``, and ``str(node)`` names the file for messages (``archive.zip/inner/path``).
Parsers find their level with :func:`find_dirs` so that the documented folder-name variants (an
extra or a missing outer folder) work alike.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "ReleaseNode",
    "child",
    "find_dirs",
    "map_values",
    "open_release",
    "read_image",
]

ReleaseNode = Path | zipfile.Path


def open_release(source: str | Path) -> ReleaseNode:
    """The root node of a release folder or ``.zip`` archive.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: if it is a file other than a zip archive.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"Release {path} not found; pass the folder or .zip as downloaded."
        )
    if path.is_dir():
        return path
    if zipfile.is_zipfile(path):
        return zipfile.Path(zipfile.ZipFile(path))
    raise ValueError(
        f"Release {path} is neither a folder nor a .zip archive; extract it or pass its folder."
    )


def find_dirs(
    root: ReleaseNode, accept: Callable[[ReleaseNode], bool], max_depth: int
) -> list[ReleaseNode]:
    """The folders within ``max_depth`` levels of ``root`` (itself included) that ``accept``
    takes; the search does not descend into an accepted folder."""
    found, level = [], [root]
    for depth in range(max_depth + 1):
        following = []
        for node in level:
            if accept(node):
                found.append(node)
            elif depth < max_depth:
                following.extend(
                    c for c in node.iterdir() if c.is_dir() and not c.name.startswith((".", "__"))
                )
        level = sorted(following, key=str)
    return found


def child(node: ReleaseNode, name: str) -> ReleaseNode | None:
    """The entry ``name`` of a folder node, or None when it is absent."""
    entry = node / name
    return entry if entry.exists() else None


def read_image(node: ReleaseNode, what: str = "image") -> Image.Image:
    """Opens an image file of the release (PNG, BMP, ...) fully decoded.

    Raises:
        ValueError: naming the file, if it is not a readable image.
    """
    try:
        img = Image.open(io.BytesIO(node.read_bytes()))
        img.load()
    except (OSError, ValueError) as err:
        raise ValueError(f"{what} {node} could not be read as an image ({err}).") from err
    return img


def map_values(
    array: np.ndarray, mapping: Mapping[int, int], file: ReleaseNode | str, documented: str
) -> np.ndarray:
    """Maps a release's label values to OCTSeg labels exactly (uint8 output).

    Args:
        array: the label image as stored in the release.
        mapping: ``{release value: OCTSeg label}``; every value present must be listed.
        file: the file the labels come from (for the error).
        documented: how the release documents its values (for the error).

    Raises:
        ValueError: naming the file, the unexpected values and the documented ones.
    """
    values = np.unique(array)
    unknown = sorted(set(values.tolist()) - set(mapping))
    if unknown:
        raise ValueError(
            f"{file}: label values {unknown[:10]} are not among the documented values "
            f"({documented}); the file is damaged or not from this release."
        )
    lut = np.zeros(int(max(int(values.max()), max(mapping))) + 1, np.uint8)
    for value, label in mapping.items():
        lut[value] = label
    return lut[array]
