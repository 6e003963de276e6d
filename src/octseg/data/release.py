"""Reading an official dataset release as downloaded: a folder or a ``.zip`` archive, read in
place, with errors that name the file and what was expected.

Every release parser reads through :class:`Release`: its files are addressed by their POSIX path
relative to the folder (or inside the archive), its folders the same way (``""`` is the top).
Parsers either match :attr:`Release.names` with a regular expression (flat releases) or walk the
folders with :meth:`Release.find_folders` and :meth:`Release.children`, so that the documented
folder-name variants (an extra or a missing outer folder) work alike. Decoding helpers turn
images, MATLAB files and label values into arrays. The writing side is
:class:`octseg.data.prepared.PreparedWriter`.
"""

from __future__ import annotations

import io
import posixpath
import tempfile
import zipfile
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

__all__ = [
    "Release",
    "check_same_shape",
    "grey_array",
    "join",
    "load_mat",
    "map_values",
]


def join(folder: str, *names: str) -> str:
    """A release path: ``names`` inside ``folder`` (``""``, the top, adds nothing)."""
    return posixpath.join(folder, *names)


def _is_metadata(name: str) -> bool:
    """macOS archives carry resource forks (``__MACOSX/``, ``._name``) and folders hold hidden
    files (``.DS_Store``); none of them is data."""
    return any(part == "__MACOSX" or part.startswith(".") for part in name.split("/"))


class Release:
    """The files of a release folder or ``.zip`` archive, read in place.

    Args:
        source: the release folder or ``.zip`` archive.
        what: what the source should hold (the dataset and its layout), for error messages.

    Attributes:
        source: the folder or archive.
        is_archive: whether ``source`` is a zip archive.
        names: the release's file paths (POSIX, relative to the folder or archive root), sorted;
            macOS metadata (``__MACOSX/``, ``._*``) and hidden files left out.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: if ``source`` is a file but not a zip archive.
    """

    def __init__(self, source: str | Path, what: str) -> None:
        self.source = Path(source).expanduser()
        self._zip: zipfile.ZipFile | None = None
        if not self.source.exists():
            raise FileNotFoundError(f"{self.source} does not exist; pass {what}.")
        self.is_archive = self.source.is_file()
        if self.is_archive:
            if not zipfile.is_zipfile(self.source):
                raise ValueError(
                    f"{self.source} is a file but not a zip archive; pass {what} (a folder, or "
                    "the .zip as downloaded; extract .tar.gz, .rar or .7z archives first)."
                )
            self._zip = zipfile.ZipFile(self.source)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        else:
            names = [
                p.relative_to(self.source).as_posix()
                for p in self.source.rglob("*")
                if p.is_file()
            ]
        self.names = sorted(n for n in names if not _is_metadata(n))
        # Folders are implied by the files (archives need not list them).
        self._children: dict[str, set[str]] = {"": set()}
        for name in self.names:
            while name:
                parent = posixpath.dirname(name)  # "" for the top
                self._children.setdefault(parent, set()).add(name)
                name = parent

    def close(self) -> None:
        """Closes the archive (a folder needs nothing)."""
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> Release:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def where(self, name: str = "") -> str:
        """A readable location of a file or folder: ``archive.zip:member`` or the path."""
        if not name:
            return str(self.source)
        return f"{self.source}:{name}" if self.is_archive else str(self.source / name)

    def basename(self, name: str) -> str:
        """The last part of a file or folder name (the source's own name for the top)."""
        return posixpath.basename(name) if name else self.source.name

    def is_dir(self, name: str) -> bool:
        """Whether ``name`` is a folder that holds at least one file."""
        return name in self._children

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a file or a (non-empty) folder of the release."""
        return name in self._children or name in self._children.get(posixpath.dirname(name), ())

    def children(self, folder: str = "") -> list[str]:
        """The files and folders directly in ``folder`` (full names), sorted."""
        return sorted(self._children.get(folder, ()))

    def find_folders(
        self, key: Callable[[str], Hashable | None], max_depth: int, wanted: str, layout: str
    ) -> dict[Any, str]:
        """The folders within ``max_depth`` levels of the top (itself included) for which
        ``key`` gives a key, by key (sorted); the search does not descend into them.

        Args:
            key: ``folder -> key``, or None for a folder that is not wanted.
            max_depth: how many folder levels to search below the top.
            wanted: what the folders are, for the error (``AROI patient folder ...``).
            layout: the release's documented layout, for the error.

        Raises:
            ValueError: if no folder is found, or two folders give one key.
        """
        found: dict[Any, str] = {}
        level = [""]
        for depth in range(max_depth + 1):
            following = []
            for folder in level:
                k = key(folder)
                if k is None:
                    if depth < max_depth:
                        following.extend(c for c in self.children(folder) if self.is_dir(c))
                elif k in found:
                    raise ValueError(
                        f"{self.basename(folder)} found twice: {self.where(found[k])} and "
                        f"{self.where(folder)}; pass one copy of the release."
                    )
                else:
                    found[k] = folder
            level = sorted(following)
        if not found:
            raise ValueError(
                f"No {wanted} within {max_depth} folder levels of {self.source}; expected the "
                f"official layout {layout}."
            )
        return dict(sorted(found.items()))

    def read_bytes(self, name: str) -> bytes:
        """The bytes of one file (a path from :attr:`names`)."""
        if self._zip is not None:
            return self._zip.read(name)
        return (self.source / name).read_bytes()

    @contextmanager
    def local_path(self, name: str) -> Iterator[Path]:
        """A path to one file on disk, for readers that only take paths: the file itself in a
        folder, a temporary copy (removed afterwards) for an archive member."""
        if self._zip is None:
            yield self.source / name
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / posixpath.basename(name)
            path.write_bytes(self._zip.read(name))
            yield path

    def read_image(self, name: str, what: str = "image") -> Image.Image:
        """Opens an image file (PNG, BMP, JPEG, TIFF, ...) fully decoded.

        Raises:
            ValueError: naming the file, if it is not a readable image.
        """
        try:
            img = Image.open(io.BytesIO(self.read_bytes(name)))
            img.load()
        except (OSError, ValueError) as err:
            where = self.where(name)
            raise ValueError(f"{what} {where} could not be read as an image ({err}).") from err
        return img

    def read_grey(self, name: str, colour: str = "refuse") -> np.ndarray:
        """A grey image file as a 2-D uint8/uint16 array (:func:`grey_array`)."""
        return grey_array(self.read_image(name), self.where(name), colour)


def grey_array(img: Image.Image, where: str, colour: str = "refuse") -> np.ndarray:
    """A release image as a 2-D uint8 or uint16 array in its stored values.

    Grey (``L``, 16-bit) is kept as stored; a palette image goes through its palette; a colour
    image whose channels are equal (grey stored as RGB) gives one channel.

    Args:
        img: the decoded image.
        where: the file, for error messages.
        colour: what to do with a colour image whose channels differ: ``refuse`` (B-scans of
            lossless releases and label images: never blend values) or ``luma`` (ITU-R 601
            luma; JPEG releases whose grey scans were saved in colour).

    Raises:
        ValueError: naming ``where``, for colour content (``refuse``) or a non-grey format.
    """
    if colour not in ("refuse", "luma"):
        raise ValueError(f"colour={colour!r}; expected 'refuse' or 'luma'.")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("1", "LA"):
        img = img.convert("L")
    array = np.array(img)
    if array.ndim == 3:
        rgb = array[..., :3]
        if (rgb == rgb[..., :1]).all():
            array = rgb[..., 0]
        elif colour == "refuse":
            raise ValueError(
                f"{where} is a colour image {array.shape} with different channels; expected a "
                "grey image (one value per pixel)."
            )
        else:
            array = np.array(Image.fromarray(rgb).convert("L"))
    if array.dtype == np.int32 and array.max(initial=0) <= 65535 and array.min(initial=0) >= 0:
        array = array.astype(np.uint16)  # PIL opens 16-bit PNGs as mode I
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"{where}: got a {array.dtype} image of shape {array.shape}; expected a 2-D 8 or "
            "16 bit grey image."
        )
    return np.ascontiguousarray(array)


def check_same_shape(labels: np.ndarray, image: np.ndarray, where: str, image_where: str) -> None:
    """Refuses a label image whose size differs from its B-scan's.

    Raises:
        ValueError: naming both files and their shapes (rows, columns).
    """
    if labels.shape != image.shape:
        raise ValueError(
            f"{where} is {labels.shape} but its image {image_where} is {image.shape} (rows, "
            "columns); a label must match its B-scan."
        )


def map_values(
    array: np.ndarray, mapping: Mapping[int, int], where: str, documented: str
) -> np.ndarray:
    """Maps a release's label values to OCTSeg labels exactly (uint8 output).

    Args:
        array: the label image as stored in the release.
        mapping: ``{release value: OCTSeg label}``; every value present must be listed.
        where: the file the labels come from (for the error).
        documented: how the release documents its values (for the error).

    Raises:
        ValueError: naming the file, the unexpected values and the documented ones.
    """
    values = np.unique(array)
    unknown = sorted(set(values.tolist()) - set(mapping))
    if unknown:
        raise ValueError(
            f"{where}: label values {unknown[:10]} are not among the documented values "
            f"({documented}); the file is damaged or not from this release."
        )
    lut = np.zeros(int(max(int(values.max()), max(mapping))) + 1, np.uint8)
    for value, label in mapping.items():
        lut[value] = label
    return lut[array]


def load_mat(release: Release, name: str, keys: Sequence[str], expected: str) -> dict[str, Any]:
    """Reads the named variables of a MATLAB file of a release.

    Args:
        release: the release.
        name: the file's name in the release.
        keys: variables to read; all must be present.
        expected: what the file should hold, for the error message.

    Returns:
        ``{key: value}`` as :func:`scipy.io.loadmat` returns them.

    Raises:
        ValueError: naming the file, if it is MATLAB v7.3 (HDF5, with how to convert it), not a
            MATLAB file, or lacks a variable (listing those found).
    """
    where = release.where(name)

    def source() -> Any:
        return io.BytesIO(release.read_bytes(name)) if release.is_archive else where

    try:
        data = scipy.io.loadmat(source(), variable_names=list(keys))
    except NotImplementedError as err:  # scipy's answer to an HDF5-based v7.3 file
        raise ValueError(
            f"{where} is a MATLAB v7.3 (HDF5) file, which OCTSeg reads with scipy only; the "
            f"release should be MATLAB v5. Re-save it in MATLAB or Octave with "
            f"`s = load('{Path(name).name}'); save('{Path(name).name}', '-struct', 's', '-v7')` "
            "and run the preparation again."
        ) from err
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(
            f"{where} could not be read as a MATLAB file ({err}); expected {expected}. Is the "
            "download complete?"
        ) from err
    missing = [k for k in keys if k not in data]
    if missing:
        try:
            found = sorted(k for k, *_ in scipy.io.whosmat(source()))
        except (ValueError, TypeError, OSError, NotImplementedError):
            found = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(
            f"{where} lacks the variable(s) {missing} (it holds {found}); expected {expected}."
        )
    return {k: data[k] for k in keys}
