"""Kermany et al. 2018 (Cell 172(5):1122-1131; Mendeley Data rscbjbr9sj, CC BY 4.0): retinal OCT
B-scans with an image-level diagnosis, to OCTSeg's prepared layout (unlabelled scans).

Release layout (``OCT2017/``, ``CellData/OCT/`` or ``OCT/`` inside the archive; any folder
above ``train/`` and ``test/`` is accepted)::

    train/<CLASS>/<CLASS>-<patient id>-<n>.jpeg      CLASS in CNV, DME, DRUSEN, NORMAL
    test/<CLASS>/...                                 patients disjoint from train
    val/<CLASS>/...                                  only in the Kaggle copy

One prepared volume per patient, class and part (``<part>-<CLASS>-<patient>``), subject = the
patient id, ``bscan_index`` = the image number ``n``. A file whose name names another class
than its folder is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

from octseg.data.image_sets import (
    ImageItem,
    find_parts,
    prepare_image_level,
)
from octseg.data.prepared import PrepareSummary
from octseg.data.release import Release

__all__ = ["CLASSES", "find_kermany_images", "prepare_kermany"]

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
_CLS = "|".join(CLASSES)
_FILE = re.compile(
    rf"(?:^|/)(train|test|val)/({_CLS})/([A-Za-z]+)-(\d+)-(\d+)\.jpe?g$", re.IGNORECASE
)
_WHAT = "the Kermany 2018 release folder or .zip as downloaded (OCT2017, CellData/OCT, ...)"
_EXPECTED = "train/<CLASS>/<CLASS>-<patient>-<n>.jpeg and test/<CLASS>/..."


def find_kermany_images(release: Release) -> list[ImageItem]:
    """The release's B-scans with part, class, patient and number.

    Raises:
        ValueError: on a wrong folder level, no image at all, or a file named for another
            class than its folder.
    """
    matches = find_parts(
        release.names, _FILE, "Kermany 2018", _EXPECTED,
        wrong_level=lambda f: re.search(rf"(^|/)({_CLS})/[^/]+\.jpe?g$", f, re.I) is not None,
    )  # fmt: skip
    items = []
    for path, m in matches:
        part, folder, named = m.group(1).lower(), m.group(2).upper(), m.group(3).upper()
        if named != folder:
            raise ValueError(
                f"{release.where(path)} is named for class {named} but lies in {folder}/; "
                f"expected {folder}-<patient>-<n>.jpeg."
            )
        patient, number = m.group(4), int(m.group(5))
        items.append(
            ImageItem(
                path,
                part,
                folder,
                patient,
                f"{part}-{folder}-{patient}",
                f"{folder}-{patient}-{number}",
                number,
            )  # fmt: skip
        )
    return items


def prepare_kermany(
    source: str | Path, out_dir: str | Path, overwrite: bool = False
) -> PrepareSummary:
    """Prepares Kermany 2018 OCT into ``out_dir`` (``dataset=kermany``).

    Args:
        source: the release folder or .zip (``OCT2017``, ``CellData/OCT``, ...).
        out_dir: output folder, ``<paths.data_dir>/kermany``.
        overwrite: replace a folder prepared with other settings.

    Returns:
        The summary; ``train/<CLASS>`` and ``test/<CLASS>`` folders without images are listed
        as missing.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: naming the file, for unreadable images or misplaced files.
    """
    return prepare_image_level(
        source,
        _WHAT,
        find_kermany_images,
        out_dir,
        "kermany",
        CLASSES,
        ("train", "test"),
        overwrite,
    )
