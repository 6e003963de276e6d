"""OCTID (Gholami et al., arXiv 1812.07056; Borealis dataverse): Cirrus B-scans with an
image-level diagnosis, to OCTSeg's prepared layout (unlabelled scans).

Release layout: one folder (or zip) per class, any folder above them::

    NORMAL/<file>.jpeg   MH/...   AMD/...   CSR/...   DR/...

Folder names are matched without case, with the variants ``NO`` (NORMAL), ``MACULAR_HOLE``
(MH), ``AMRD``/``ARMD`` (AMD), ``CSCR`` (CSR) and ``DIABETIC_RETINOPATHY`` (DR); the exact names
of the download are unconfirmed. The release names no patients and has no split: each image is
its own volume and subject, all in the ``test`` part (an external test set). The 25 layer
delineations of normal scans are not read: their file format is not documented (see
docs/datasets.md), so OCTID is image-level only here.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from octseg.data.image_sets import (
    ImageItem,
    find_parts,
    prepare_image_level,
    safe_id,
)
from octseg.data.prepared import PrepareSummary
from octseg.data.release import Release

__all__ = ["CLASSES", "FOLDERS", "find_octid_images", "prepare_octid"]

CLASSES = ("NORMAL", "MH", "AMD", "CSR", "DR")
#: class folder name (upper case) -> class.
FOLDERS = {
    "NORMAL": "NORMAL", "NO": "NORMAL", "MH": "MH", "MACULAR_HOLE": "MH", "AMD": "AMD",
    "AMRD": "AMD", "ARMD": "AMD", "CSR": "CSR", "CSCR": "CSR", "DR": "DR",
    "DIABETIC_RETINOPATHY": "DR",
}  # fmt: skip
_FILE = re.compile(rf"(?:^|/)({'|'.join(FOLDERS)})/([^/]+)\.(jpe?g|png|tiff?)$", re.IGNORECASE)
_WHAT = "the OCTID folder (or .zip) holding the class folders"
_EXPECTED = "NORMAL/<file>.jpeg, MH/..., AMD/..., CSR/..., DR/..."


def find_octid_images(release: Release) -> list[ImageItem]:
    """The release's B-scans with their class (each its own volume, part ``test``).

    Raises:
        ValueError: if no class folder holds an image, or two files share a name.
    """
    items, seen = [], {}
    for path, m in find_parts(release.names, _FILE, "OCTID", _EXPECTED):
        image_class = FOLDERS[m.group(1).upper()]
        case = safe_id(f"{image_class}_{PurePosixPath(path).stem}")
        if case in seen:
            raise ValueError(
                f"{release.where(path)} and {release.where(seen[case])} give the same scan "
                f"{case!r}; pass one copy of the release."
            )
        seen[case] = path
        items.append(ImageItem(path, "test", image_class, case, case, case))
    return items


def prepare_octid(
    source: str | Path, out_dir: str | Path, overwrite: bool = False
) -> PrepareSummary:
    """Prepares OCTID into ``out_dir`` (``dataset=octid``).

    Args:
        source: the folder (or zip) holding the class folders.
        out_dir: output folder, ``<paths.data_dir>/octid``.
        overwrite: replace a folder prepared with other settings.

    Returns:
        The summary; class folders without images are listed as missing.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: naming the file, for unreadable images.
    """
    return prepare_image_level(
        source, _WHAT, find_octid_images, out_dir, "octid", CLASSES, ("test",), overwrite
    )
