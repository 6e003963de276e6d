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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from octseg.data.base import BScanRecord
from octseg.data.prepared import PreparedWriter, PrepareSummary
from octseg.data.release_tree import (
    ReleaseNode,
    child,
    find_dirs,
    grey_array,
    map_values,
    open_release,
    read_image,
    stream_volumes,
)

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
_DOCUMENTED = "0 RNFL, 80 GCIPL, 160 choroid, 255 other"
_STEM = re.compile(r"^(\d+)\.png$")


def _is_set(node: ReleaseNode) -> bool:
    return node.name in SETS and child(node, "Image") is not None


def find_sets(source: str | Path) -> dict[str, ReleaseNode]:
    """The ``Train``/``Validation``/``Test`` folders of a release folder or archive.

    Raises:
        FileNotFoundError: if ``source`` is missing.
        ValueError: if ``source`` is an ``Image`` folder (wrong level) or holds no set.
    """
    root = open_release(source)
    if root.name in ("Image", "Layer_Masks"):
        raise ValueError(
            f"{source} is the {root.name} folder; pass the folder (or archive) above Train, "
            f"e.g. GOALS2022-Train ({_LAYOUT})."
        )
    found: dict[str, ReleaseNode] = {}
    for node in find_dirs(root, _is_set, max_depth=3):
        if node.name in found:
            raise ValueError(f"Set {node.name} found twice: {found[node.name]} and {node}.")
        found[node.name] = node
    if not found:
        raise ValueError(
            f"No GOALS set folder (Train/Image, Validation/Image, Test/Image) within three "
            f"levels of {source}; expected the official layout {_LAYOUT}."
        )
    return found


def read_glaucoma_labels(node: ReleaseNode) -> dict[int, int]:
    """``{image number: 0/1}`` from a ``*_GC_GT.xlsx`` sheet (columns ImgName, GC_Label).

    Raises:
        ValueError: naming the file, for a sheet without those columns or labels not 0/1.
    """
    import openpyxl  # only GOALS reads spreadsheets

    try:
        book = openpyxl.load_workbook(io.BytesIO(node.read_bytes()), read_only=True)
        rows = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{node} could not be read as an .xlsx sheet ({err}).") from err
    header = [str(h).strip() if h is not None else "" for h in (rows[0] if rows else [])]
    if "ImgName" not in header or "GC_Label" not in header:
        raise ValueError(f"{node}: columns {header}; expected ImgName and GC_Label.")
    i, j = header.index("ImgName"), header.index("GC_Label")
    labels = {}
    for row in rows[1:]:
        if row[i] is None:
            continue
        name, label = int(str(row[i]).split(".")[0]), row[j]
        if label not in (0, 1):
            raise ValueError(f"{node}: GC_Label {label!r} of image {name}; expected 0 or 1.")
        labels[name] = int(label)
    return labels


def read_image_volume(
    set_dir: ReleaseNode, stem: str, glaucoma: dict[int, int] | None
) -> tuple[list[BScanRecord], dict[str, Any]]:
    """One image of a set (and its mask, when the set has ``Layer_Masks``) as a volume.

    Raises:
        ValueError: naming the file, for a missing mask, a size mismatch or undocumented
            mask values.
    """
    volume_id = f"{SETS[set_dir.name]}_{stem}"
    node = set_dir / "Image" / f"{stem}.png"
    image = grey_array(read_image(node, "B-scan"), node)
    mask = None
    masks = child(set_dir, "Layer_Masks")
    if masks is not None:
        mask_node = masks / f"{stem}.png"
        if not mask_node.exists():
            raise ValueError(f"{node} has no mask {mask_node}.")
        values = grey_array(read_image(mask_node, "mask"), mask_node)
        mask = map_values(values, MASK_VALUES, mask_node, _DOCUMENTED)
        if mask.shape != image.shape:
            raise ValueError(f"{mask_node} is {mask.shape} but {node} is {image.shape}.")
    meta = {"set": set_dir.name, "file": f"{stem}.png", "source": str(node)}
    if glaucoma is not None:
        meta["glaucoma"] = glaucoma.get(int(stem))
        if meta["glaucoma"] is None:
            raise ValueError(f"Image {stem} has no GC_Label row in the set's _GC_GT.xlsx sheet.")
    record = BScanRecord(image, mask, volume_id, volume_id, 0, None, volume_id)
    return [record], meta


def _reader(
    set_dir: ReleaseNode, glaucoma: dict[int, int] | None
) -> Callable[[str], tuple[list[BScanRecord], dict[str, Any]]]:
    """``volume_id -> (records, meta)`` for one set (ids are ``<set>_<stem>``)."""
    return lambda volume_id: read_image_volume(set_dir, volume_id.split("_", 1)[1], glaucoma)


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
    found = find_sets(source)
    wanted = [s for s in SETS if s in sets]
    writer = PreparedWriter(
        out_dir, "goals", {"sets": wanted}, len(CLASS_NAMES), overwrite=overwrite
    )
    missing = [s for s in wanted if s not in found]
    for name in (s for s in wanted if s in found):
        set_dir = found[name]
        sheets = [n for n in set_dir.iterdir() if n.name.endswith("_GC_GT.xlsx")]
        glaucoma = read_glaucoma_labels(sheets[0]) if sheets else None
        if name == "Train" and not sheets:
            missing.append("Train/Train_GC_GT.xlsx")
        stems = sorted(
            m.group(1) for n in (set_dir / "Image").iterdir() if (m := _STEM.match(n.name))
        )
        if not stems:
            raise ValueError(f"{set_dir / 'Image'} holds no <number>.png image.")
        stream_volumes(writer, [f"{SETS[name]}_{s}" for s in stems], _reader(set_dir, glaucoma))
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
