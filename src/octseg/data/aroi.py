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
from octseg.data.release import Release, check_same_shape, grey_array, join, map_values
from octseg.data.splits import rotating_folds

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
_WHAT = "the AROI release folder or .zip (any level above patient1)"
_DOCUMENTED = "0..7: above ILM, ILM-IPL/INL, IPL/INL-RPE, RPE-BM, below BM, PED, SRF, IRF"


def find_patients(release: Release) -> dict[int, str]:
    """The ``patient{N}`` folders of a release, by patient number.

    Raises:
        ValueError: if the release is one patient's folder (wrong level) or holds none.
    """
    if release.is_dir("raw") and release.is_dir("mask"):
        raise ValueError(
            f"{release.source} is a single patient folder; pass the folder (or archive) that "
            f"holds patient1..patient24, e.g. the one above {_LAYOUT}."
        )

    def patient(folder: str) -> int | None:
        match = _PATIENT_DIR.match(release.basename(folder))
        return int(match.group(1)) if match and release.is_dir(join(folder, "raw")) else None

    return release.find_folders(
        patient, 4, "AROI patient folder (patient<N>/raw/labeled)", _LAYOUT
    )


def read_patient(release: Release, folder: str) -> tuple[list[BScanRecord], dict[str, Any]]:
    """Reads one patient's annotated B-scans (``raw/labeled`` with ``mask/number``).

    Raises:
        ValueError: naming the file, for a B-scan without its mask, an unreadable PNG, a size
            mismatch or labels outside 0..7.
    """
    volume_id = release.basename(folder)
    raw_dir, mask_dir = join(folder, "raw/labeled"), join(folder, "mask/number")
    if not release.is_dir(raw_dir) or not release.is_dir(mask_dir):
        raise ValueError(
            f"{release.where(folder)} lacks raw/labeled or mask/number; expected {_LAYOUT}."
        )
    scans = [n for n in release.children(raw_dir) if _SCAN.match(release.basename(n))]
    if not scans:
        raise ValueError(f"{release.where(raw_dir)} holds no patient<N>_raw<NNNN>.png B-scan.")
    records = []
    for name in scans:
        base = release.basename(name)
        mask_name = join(mask_dir, base)
        where, mask_where = release.where(name), release.where(mask_name)
        if not release.exists(mask_name):
            raise ValueError(f"{where} has no label file {mask_where}.")
        image = grey_array(release.read_image(name, "B-scan"), where)
        labels = release.read_image(mask_name, "label file")
        if labels.mode not in ("L", "P"):
            raise ValueError(f"{mask_where}: mode {labels.mode}; mask/number files are grey 0..7.")
        mask = map_values(np.array(labels), {k: k for k in range(8)}, mask_where, _DOCUMENTED)
        check_same_shape(mask, image, mask_where, where)
        index = int(_SCAN.match(base).group(2))
        records.append(
            BScanRecord(image, mask, base[: -len(".png")], volume_id, index, None, volume_id)
        )
    return records, {"source": release.where(folder), "bscans": len(records)}


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
    with Release(source, _WHAT) as release:
        found = find_patients(release)
        wanted = sorted(set(patients))
        writer = PreparedWriter(
            out_dir, "aroi", {"patients": wanted}, len(CLASS_NAMES), overwrite=overwrite
        )
        by_id = {f"patient{n}": found[n] for n in wanted if n in found}
        writer.write_volumes(by_id, lambda v: read_patient(release, by_id[v]))
        return writer.finish(missing=[f"patient{n}" for n in wanted if n not in found])


def split_specs() -> dict[str, dict[str, Any]]:
    """The published AROI split files, by patient (the paper's lists are not published).

    - ``default``: train patients 1-16, validation 17-20, test 21-24.
    - ``kfold``: 6 folds; fold f tests patients 4f+1..4f+4, validates on the next four
      (wrapping), trains on the other 16.
    """
    ids = [f"patient{n}" for n in PATIENTS]
    kfold = rotating_folds({p: i // 4 for i, p in enumerate(ids)}, 6)
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
