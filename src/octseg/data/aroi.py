"""AROI (Melinščak et al., Automatika 62(3), 2021): 24 nAMD patients (Zeiss Cirrus HD-OCT 4000),
1136 annotated B-scans, to OCTSeg's prepared layout.

Release layout (the outer folders may be missing; any level above ``patient1`` works)::

    AROI - online/24 patient/patient{1..24}/
        raw/labeled/patient{N}_raw{NNNN}.png    B-scan, 512 W x 1024 H (palette or grey PNG)
        mask/number/patient{N}_raw{NNNN}.png    labels 0..7 (grey PNG)
        mask/colour/...                         colour rendering (not read)

Labels of ``mask/number`` are OCTSeg's as they are: 0 above ILM, 1 ILM - IPL/INL,
2 IPL/INL - RPE, 3 RPE - BM, 4 below BM, 5 PED, 6 SRF, 7 IRF. One volume per patient
(``patient{N}``); ``NNNN`` is kept as the B-scan index (presumably its place in the 128-scan
cube, unconfirmed). The release holds no spacing: the config's Cirrus values apply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
    "PATIENTS",
    "find_patients",
    "prepare_aroi",
    "read_patient",
    "split_specs",
]

CLASS_NAMES = (
    "above ILM",
    "ILM-IPL/INL",
    "IPL/INL-RPE",
    "RPE-BM",
    "below BM",
    "PED",
    "SRF",
    "IRF",
)
PATIENTS = tuple(range(1, 25))
CITATION = "Melinscak et al., Automatika 62(3):375-385, 2021"
_PATIENT_DIR = re.compile(r"^patient(\d+)$")
_SCAN = re.compile(r"^patient(\d+)_raw(\d+)\.png$")
_LAYOUT = "AROI - online/24 patient/patient1/{raw/labeled,mask/number}/patient1_raw0001.png"
_DOCUMENTED = "0..7: above ILM, ILM-IPL/INL, IPL/INL-RPE, RPE-BM, below BM, PED, SRF, IRF"


def _is_patient(node: ReleaseNode) -> bool:
    return bool(_PATIENT_DIR.match(node.name)) and child(node, "raw") is not None


def find_patients(source: str | Path) -> dict[int, ReleaseNode]:
    """The ``patient{N}`` folders of a release folder or archive, by patient number.

    Raises:
        FileNotFoundError: if ``source`` is missing.
        ValueError: if ``source`` is one patient's folder (wrong level) or holds none.
    """
    root = open_release(source)
    if child(root, "raw") is not None and child(root, "mask") is not None:
        raise ValueError(
            f"{source} is a single patient folder; pass the folder (or archive) that holds "
            f"patient1..patient24, e.g. the one above {_LAYOUT}."
        )
    found: dict[int, ReleaseNode] = {}
    for node in find_dirs(root, _is_patient, max_depth=4):
        number = int(_PATIENT_DIR.match(node.name).group(1))
        if number in found:
            raise ValueError(f"patient{number} found twice: {found[number]} and {node}.")
        found[number] = node
    if not found:
        raise ValueError(
            f"No AROI patient folder (patient<N>/raw/labeled) within four levels of {source}; "
            f"expected the official layout {_LAYOUT}."
        )
    return dict(sorted(found.items()))


def read_patient(folder: ReleaseNode) -> tuple[list[BScanRecord], dict[str, Any]]:
    """Reads one patient's annotated B-scans (``raw/labeled`` with ``mask/number``).

    Raises:
        ValueError: naming the file, for a B-scan without its mask, an unreadable PNG, a size
            mismatch or labels outside 0..7.
    """
    volume_id = folder.name
    raw_dir, mask_dir = folder / "raw" / "labeled", folder / "mask" / "number"
    if not raw_dir.exists() or not mask_dir.exists():
        raise ValueError(f"{folder} lacks raw/labeled or mask/number; expected {_LAYOUT}.")
    scans = sorted((n for n in raw_dir.iterdir() if _SCAN.match(n.name)), key=lambda n: n.name)
    if not scans:
        raise ValueError(f"{raw_dir} holds no patient<N>_raw<NNNN>.png B-scan.")
    records = []
    for node in scans:
        mask_node = mask_dir / node.name
        if not mask_node.exists():
            raise ValueError(f"{node} has no label file {mask_node}.")
        image = grey_array(read_image(node, "B-scan"), node)
        labels = read_image(mask_node, "label file")
        if labels.mode not in ("L", "P"):
            raise ValueError(f"{mask_node}: mode {labels.mode}; mask/number files are grey 0..7.")
        mask = map_values(np.array(labels), {k: k for k in range(8)}, mask_node, _DOCUMENTED)
        if mask.shape != image.shape:
            raise ValueError(f"{mask_node} is {mask.shape} but {node} is {image.shape}.")
        index = int(_SCAN.match(node.name).group(2))
        records.append(
            BScanRecord(image, mask, node.name[: -len(".png")], volume_id, index, None, volume_id)
        )
    return records, {"source": str(folder), "bscans": len(records)}


def prepare_aroi(
    source: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    patients: Sequence[int] = PATIENTS,
) -> PrepareSummary:
    """Prepares AROI patients into ``out_dir`` (``<paths.data_dir>/aroi``).

    Args:
        source: the release folder or archive (any level above ``patient1``).
        out_dir: output folder.
        overwrite: replace a folder prepared with other settings.
        patients: patient numbers to prepare (default 1..24).

    Returns:
        The summary; patients absent from the release are listed as missing.

    Raises:
        FileNotFoundError, ValueError: naming the file or setting at fault.
    """
    bad = sorted(set(patients) - set(PATIENTS))
    if bad or not patients:
        raise ValueError(f"patients={list(patients)}: AROI patients are 1..24.")
    found = find_patients(source)
    wanted = sorted(set(patients))
    writer = PreparedWriter(
        out_dir, "aroi", {"patients": wanted}, len(CLASS_NAMES), overwrite=overwrite
    )
    present = [n for n in wanted if n in found]
    by_id = {f"patient{n}": found[n] for n in present}
    stream_volumes(writer, list(by_id), lambda v: read_patient(by_id[v]))
    return writer.finish(missing=[f"patient{n}" for n in wanted if n not in found])


def split_specs() -> dict[str, dict[str, Any]]:
    """The published AROI split files, by patient (the paper's lists are not published).

    - ``default``: train patients 1-16, validation 17-20, test 21-24.
    - ``kfold``: 6 folds; fold f tests patients 4f+1..4f+4, validates on the next four
      (wrapping), trains on the other 16.
    """
    ids = [f"patient{n}" for n in PATIENTS]
    groups = [ids[4 * f : 4 * f + 4] for f in range(6)]
    kfold = []
    for f in range(6):
        test, val = groups[f], groups[(f + 1) % 6]
        kfold.append({"fold": f, "train": [i for i in ids if i not in test + val],
                      "val": val, "test": test})  # fmt: skip
    common = {"dataset": "aroi", "source": CITATION, "unit": "subject"}
    return {
        "default": {
            **common,
            "protocol": "default",
            "description": "Rule-based (the paper's patient lists are unpublished): train "
            "patients 1-16, validation 17-20, test 21-24.",
            "folds": [{"fold": 0, "train": ids[:16], "val": ids[16:20], "test": ids[20:]}],
        },
        "kfold": {
            **common,
            "protocol": "kfold",
            "description": "6-fold by patient: fold f tests patients 4f+1..4f+4, validates on "
            "the next four (wrapping), trains on the other 16.",
            "folds": kfold,
        },
    }
