"""Reading an official dataset release as downloaded: a folder or a ``.zip`` archive, MATLAB
``.mat`` files and grey images, with errors that name the file and what was expected.

Used by the release parsers (``octa500``, ``umn``, ``duke_amd``); the writing side is
:mod:`octseg.data.prepared`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

__all__ = ["Release", "load_mat"]


class Release:
    """The files of a release, addressed by their POSIX path relative to the folder (or inside
    the archive).

    Args:
        source: the release folder or ``.zip`` archive.
        what: the dataset's name and what the source should hold, for the error message.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: if ``source`` is a file but not a zip archive.
    """

    def __init__(self, source: str | Path, what: str) -> None:
        self.source = Path(source).expanduser()
        if not self.source.exists():
            raise FileNotFoundError(f"{self.source} does not exist; pass {what}.")
        self.is_archive = self.source.is_file()
        if self.is_archive:
            if not zipfile.is_zipfile(self.source):
                raise ValueError(
                    f"{self.source} is a file but not a zip archive; pass {what} (a folder, or "
                    "the .zip as downloaded)."
                )
            with zipfile.ZipFile(self.source) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
        else:
            names = [p.relative_to(self.source).as_posix() for p in self.source.rglob("*")]
            names = [n for n in names if (self.source / n).is_file()]
        # macOS archives carry resource forks (__MACOSX/, ._name) that are not data.
        self.names = sorted(
            n for n in names if "__MACOSX" not in n and not Path(n).name.startswith("._")
        )

    def where(self, name: str) -> str:
        """A readable location of a file: ``archive.zip:member`` or the file path."""
        return f"{self.source}:{name}" if self.is_archive else str(self.source / name)

    def read_bytes(self, name: str) -> bytes:
        """The bytes of one file."""
        if self.is_archive:
            with zipfile.ZipFile(self.source) as archive:
                return archive.read(name)
        return (self.source / name).read_bytes()

    def read_grey_image(self, name: str) -> np.ndarray:
        """A grey image (BMP, PNG, ...) as a 2-D array in its stored dtype.

        Raises:
            ValueError: if the file cannot be decoded or is a colour image.
        """
        try:
            with Image.open(io.BytesIO(self.read_bytes(name))) as img:
                array = np.array(img.convert("L") if img.mode == "P" else img)
        except (OSError, ValueError) as err:
            raise ValueError(f"{self.where(name)} could not be read as an image ({err}).") from err
        if array.ndim == 3:  # grey stored as RGB(A): all colour channels equal
            if not all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, 3)):
                raise ValueError(
                    f"{self.where(name)} is a colour image {array.shape}; expected a grey B-scan."
                )
            array = array[..., 0]
        return array


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
    source: Any = io.BytesIO(release.read_bytes(name)) if release.is_archive else where
    try:
        data = scipy.io.loadmat(source, variable_names=list(keys))
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
            again = io.BytesIO(release.read_bytes(name)) if release.is_archive else where
            found = sorted(k for k, *_ in scipy.io.whosmat(again))
        except (ValueError, TypeError, OSError, NotImplementedError):
            found = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(
            f"{where} lacks the variable(s) {missing} (it holds {found}); expected {expected}."
        )
    return {k: data[k] for k in keys}
