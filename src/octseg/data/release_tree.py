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
import logging
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from octseg.data.base import BScanRecord
from octseg.data.prepared import PreparedWriter

__all__ = [
    "ReleaseNode",
    "child",
    "find_dirs",
    "grey_array",
    "map_values",
    "open_release",
    "read_image",
    "stream_volumes",
]

log = logging.getLogger(__name__)

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


def grey_array(img: Image.Image, node: ReleaseNode | str) -> np.ndarray:
    """A release image as a 2-D uint8/uint16 array: grey (``L``, 16-bit ``I;16``) as stored, a
    palette image through its palette, RGB(A) only when its colour channels are equal.

    Raises:
        ValueError: naming the file, for colour content or an unsupported mode.
    """
    if img.mode == "P":
        img = img.convert("L")
    if img.mode in ("L", "I;16"):
        return np.array(img)
    if img.mode in ("RGB", "RGBA"):
        rgb = np.array(img)[..., :3]
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
        raise ValueError(f"{node} holds colour, not a grey B-scan (mode {img.mode}).")
    raise ValueError(f"{node}: image mode {img.mode!r}; expected a grey, palette or RGB PNG.")


def stream_volumes(
    writer: PreparedWriter,
    volume_ids: Iterable[str],
    read: Callable[[str], tuple[Sequence[BScanRecord], Mapping[str, Any]]],
) -> None:
    """Writes each volume ``read(volume_id) -> (records, meta)`` unless the folder already
    holds it (a rerun skips it, unread)."""
    for volume_id in volume_ids:
        if writer.has_volume(volume_id):
            writer.skip_volume(volume_id)
            continue
        records, meta = read(volume_id)
        writer.write_volume(records, meta=meta)
        log.info("%s: %s written (%d B-scans)", writer.dataset, volume_id, len(records))
        del records  # else it lives on while the next volume is read: two volumes in memory
