"""OCT-C8 (Kaggle ``obulisainaren/retinal-oct-c8``): 24,000 retinal OCT B-scans of 8 classes
with an image-level diagnosis, to OCTSeg's prepared layout (unlabelled scans).

Release layout (``RetinalOCT_Dataset/`` inside the archive; any folder above the parts)::

    train/<CLASS>/<class>_train_<n>.jpg     18,400 (2,300 per class)
    val/<CLASS>/<class>_val_<n>.jpg          2,800
    test/<CLASS>/<class>_test_<n>.jpg        2,800
    CLASS in AMD, CNV, CSR, DME, DR, DRUSEN, MH, NORMAL

The release names no patients, so each image is its own volume and subject (split by
volume); it is compiled from other sets (Kermany 2018 likely among them): never mix it with
another set's test data.
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

__all__ = ["CLASSES", "find_oct_c8_images", "prepare_oct_c8"]

CLASSES = ("AMD", "CNV", "CSR", "DME", "DR", "DRUSEN", "MH", "NORMAL")
_PART = {"train": "train", "val": "val", "validation": "val", "test": "test"}
_FILE = re.compile(
    rf"(?:^|/)(train|val|validation|test)/({'|'.join(CLASSES)})/[^/]+\.(jpe?g|png)$",
    re.IGNORECASE,
)
_WHAT = "the OCT-C8 release folder or the Kaggle .zip as downloaded"
_EXPECTED = "train/<CLASS>/<file>.jpg, val/<CLASS>/... and test/<CLASS>/..."


def find_oct_c8_images(release: Release) -> list[ImageItem]:
    """The release's B-scans with part and class (each its own volume).

    Raises:
        ValueError: on a wrong folder level, no image, or two files of one name.
    """
    matches = find_parts(
        release.names, _FILE, "OCT-C8", _EXPECTED,
        wrong_level=lambda f: re.search(rf"(^|/)({'|'.join(CLASSES)})/[^/]+\.(jpe?g|png)$", f,
                                        re.IGNORECASE) is not None,
    )  # fmt: skip
    items, seen = [], {}
    for path, m in matches:
        case = safe_id(PurePosixPath(path).stem)
        if case in seen:
            raise ValueError(
                f"{release.where(path)} and {release.where(seen[case])} share the name {case!r}; "
                "OCT-C8 file names are unique in the release."
            )
        seen[case] = path
        items.append(
            ImageItem(path, _PART[m.group(1).lower()], m.group(2).upper(), case, case, case)
        )
    return items


def prepare_oct_c8(
    source: str | Path, out_dir: str | Path, overwrite: bool = False
) -> PrepareSummary:
    """Prepares OCT-C8 into ``out_dir`` (``dataset=oct_c8``).

    Args:
        source: the release folder or the Kaggle .zip.
        out_dir: output folder, ``<paths.data_dir>/oct_c8``.
        overwrite: replace a folder prepared with other settings.

    Returns:
        The summary; ``<part>/<CLASS>`` folders without images are listed as missing.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: naming the file, for unreadable images or a wrong folder level.
    """
    return prepare_image_level(
        source,
        _WHAT,
        find_oct_c8_images,
        out_dir,
        "oct_c8",
        CLASSES,
        ("train", "val", "test"),
        overwrite,
    )
