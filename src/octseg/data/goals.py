"""GOALS (MICCAI 2022; Fang et al., arXiv 2207.14447): circumpapillary Topcon SS-OCT B-scans
(1100 W x 800 H) with RNFL, GCIPL and choroid masks and a binary glaucoma label, to OCTSeg's
prepared layout.

Release layout (outer folders may be missing; any level above ``Train`` works)::

    GOALS2022-Train/Train/Image/0001.png ... 0100.png
    GOALS2022-Train/Train/Layer_Masks/0001.png ...     0 RNFL, 80 GCIPL, 160 choroid, 255 other
    GOALS2022-Train/Train/Train_GC_GT.xlsx             ImgName (int), GC_Label (0/1)
    .../Validation/Image/..., .../Test/Image/...       (masks, if present, as Train's)

Mask values are remapped exactly: 255 (everything else) -> 0 background, 0 -> 1 RNFL,
80 -> 2 GCIPL, 160 -> 3 choroid. Each image is one eye: one volume ``<set>_<stem>``
(``train_0001``); the release names no patient, so the subject is the eye. The glaucoma label is
kept in the volume's meta (``glaucoma``). Images of a set without ``Layer_Masks`` are prepared
unlabelled. The release holds no spacing (see the config).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from octseg.data.base import BScanRecord
from octseg.data.prepared import PreparedWriter, PrepareSummary
from octseg.data.release import Release, check_same_shape, grey_array, join, map_values

__all__ = [
    "CLASS_NAMES",
    "MASK_VALUES",
    "SETS",
    "find_sets",
    "prepare_goals",
    "read_glaucoma_labels",
    "read_image_volume",
    "split_specs",
]

CLASS_NAMES = ("background", "RNFL", "GCIPL", "choroid")
#: Release mask value -> OCTSeg label.
MASK_VALUES = {255: 0, 0: 1, 80: 2, 160: 3}
#: Release folder name -> set prefix of the volume ids.
SETS = {"Train": "train", "Validation": "val", "Test": "test"}
CITATION = "Fang et al., GOALS challenge (MICCAI 2022), arXiv:2207.14447"
_LAYOUT = "GOALS2022-Train/Train/{Image,Layer_Masks}/0001.png + Train_GC_GT.xlsx"
_WHAT = "the GOALS release folder or .zip (any level above Train)"
_DOCUMENTED = "0 RNFL, 80 GCIPL, 160 choroid, 255 other"
_STEM = re.compile(r"^(\d+)\.png$")


def find_sets(release: Release) -> dict[str, str]:
    """The ``Train``/``Validation``/``Test`` folders of a release, by name.

    Raises:
        ValueError: if the release is an ``Image`` folder (wrong level) or holds no set.
    """
    top = release.basename("")
    if top in ("Image", "Layer_Masks"):
        raise ValueError(
            f"{release.source} is the {top} folder; pass the folder (or archive) above Train, "
            f"e.g. GOALS2022-Train ({_LAYOUT})."
        )

    def set_name(folder: str) -> str | None:
        name = release.basename(folder)
        return name if name in SETS and release.is_dir(join(folder, "Image")) else None

    wanted = "GOALS set folder (Train/Image, Validation/Image, Test/Image)"
    return release.find_folders(set_name, 3, wanted, _LAYOUT)


def read_glaucoma_labels(release: Release, name: str) -> dict[int, int]:
    """``{image number: 0/1}`` from a ``*_GC_GT.xlsx`` sheet (columns ImgName, GC_Label).

    Raises:
        ValueError: naming the file, for a sheet without those columns or labels not 0/1.
    """
    import openpyxl  # only GOALS reads spreadsheets

    where = release.where(name)
    try:
        book = openpyxl.load_workbook(io.BytesIO(release.read_bytes(name)), read_only=True)
        rows = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{where} could not be read as an .xlsx sheet ({err}).") from err
    header = [str(h).strip() if h is not None else "" for h in (rows[0] if rows else [])]
    if "ImgName" not in header or "GC_Label" not in header:
        raise ValueError(f"{where}: columns {header}; expected ImgName and GC_Label.")
    i, j = header.index("ImgName"), header.index("GC_Label")
    labels = {}
    for row in rows[1:]:
        if row[i] is None:
            continue
        number, label = int(str(row[i]).split(".")[0]), row[j]
        if label not in (0, 1):
            raise ValueError(f"{where}: GC_Label {label!r} of image {number}; expected 0 or 1.")
        labels[number] = int(label)
    return labels


def read_image_volume(
    release: Release, set_dir: str, stem: str, glaucoma: dict[int, int] | None
) -> tuple[list[BScanRecord], dict[str, Any]]:
    """One image of a set (and its mask, when the set has ``Layer_Masks``) as a volume.

    Raises:
        ValueError: naming the file, for a missing mask, a size mismatch or undocumented
            mask values.
    """
    set_name = release.basename(set_dir)
    volume_id = f"{SETS[set_name]}_{stem}"
    name = join(set_dir, f"Image/{stem}.png")
    where = release.where(name)
    image = grey_array(release.read_image(name, "B-scan"), where)
    mask = None
    if release.is_dir(join(set_dir, "Layer_Masks")):
        mask_name = join(set_dir, f"Layer_Masks/{stem}.png")
        mask_where = release.where(mask_name)
        if not release.exists(mask_name):
            raise ValueError(f"{where} has no mask {mask_where}.")
        values = grey_array(release.read_image(mask_name, "mask"), mask_where)
        mask = map_values(values, MASK_VALUES, mask_where, _DOCUMENTED)
        check_same_shape(mask, image, mask_where, where)
    meta = {"set": set_name, "file": f"{stem}.png", "source": where}
    if glaucoma is not None:
        meta["glaucoma"] = glaucoma.get(int(stem))
        if meta["glaucoma"] is None:
            raise ValueError(f"Image {stem} has no GC_Label row in the set's _GC_GT.xlsx sheet.")
    record = BScanRecord(image, mask, volume_id, volume_id, 0, None, volume_id)
    return [record], meta


def prepare_goals(
    source: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    sets: Sequence[str] = ("Train",),
) -> PrepareSummary:
    """Prepares the GOALS sets found in ``source`` into ``out_dir`` (``<paths.data_dir>/goals``).

    Args:
        source: the release folder or archive (any level above ``Train``).
        out_dir: output folder.
        overwrite: replace a folder prepared with other settings.
        sets: which of Train, Validation, Test to prepare (default Train; those absent are
            listed as missing).

    Returns:
        The summary; requested sets (and the Train glaucoma sheet) absent from the release are
        listed as missing.

    Raises:
        FileNotFoundError, ValueError: naming the file or setting at fault.
    """
    bad = sorted(set(sets) - set(SETS))
    if bad or not sets:
        raise ValueError(f"sets={list(sets)}: choose among {list(SETS)}.")
    with Release(source, _WHAT) as release:
        found = find_sets(release)
        wanted = [s for s in SETS if s in sets]
        writer = PreparedWriter(
            out_dir, "goals", {"sets": wanted}, len(CLASS_NAMES), overwrite=overwrite
        )
        missing = [s for s in wanted if s not in found]
        for name in (s for s in wanted if s in found):
            set_dir = found[name]
            sheets = [n for n in release.children(set_dir) if n.endswith("_GC_GT.xlsx")]
            glaucoma = read_glaucoma_labels(release, sheets[0]) if sheets else None
            if name == "Train" and not sheets:
                missing.append("Train/Train_GC_GT.xlsx")
            stems = [
                m.group(1)
                for n in release.children(join(set_dir, "Image"))
                if (m := _STEM.match(release.basename(n)))
            ]
            if not stems:
                raise ValueError(
                    f"{release.where(set_dir + '/Image')} holds no <number>.png image."
                )
            writer.write_volumes(
                [f"{SETS[name]}_{s}" for s in stems],
                lambda v, d=set_dir, g=glaucoma: read_image_volume(
                    release, d, v.split("_", 1)[1], g
                ),
            )
        return writer.finish(missing=missing)


def split_specs() -> dict[str, dict[str, Any]]:
    """The published GOALS split files, by volume (= eye; the release names no patient).

    - ``challenge``: the challenge's sets: train = Train 0001-0100, validation = Validation,
      test = Test (their file names, assumed 0001-0100 like Train's, are unconfirmed; their
      masks were not released with the images).
    - ``holdout``: within the labelled Train set: 0001-0080 train, 0081-0090 validation,
      0091-0100 test. The two eyes of one person may fall in different parts (no patient ids).
    """
    train = [f"train_{i:04d}" for i in range(1, 101)]
    common = {"dataset": "goals", "source": CITATION, "unit": "volume"}
    return {
        "challenge": {
            **common,
            "protocol": "challenge",
            "description": "GOALS challenge sets: Train / Validation (preliminary) / Test "
            "(final); Validation and Test file names (0001-0100) and masks unconfirmed.",
            "folds": [
                {
                    "fold": 0,
                    "train": train,
                    "val": [f"val_{i:04d}" for i in range(1, 101)],
                    "test": [f"test_{i:04d}" for i in range(1, 101)],
                }
            ],
        },
        "holdout": {
            **common,
            "protocol": "holdout",
            "description": "Within the labelled Train set by image number: 1-80 train, 81-90 "
            "validation, 91-100 test (eyes; patient ids are not released).",
            "folds": [{"fold": 0, "train": train[:80], "val": train[80:90], "test": train[90:]}],
        },
    }
