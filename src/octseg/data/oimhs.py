"""OIMHS (Ye et al., Sci Data 10:769, 2023, doi 10.1038/s41597-023-02675-1): 3,859 macular-hole
B-scans of 125 eyes (119 patients) with retina, choroid, cyst and hole masks, to OCTSeg's
prepared layout.

Release layout (figshare archive; an outer folder may be missing)::

    Images/<eye_id>/<k>.png                     composite: left 512 columns the B-scan, right 512
                                                the RGB label map
    Demographics of the participants.csv        Patient ID, Eye ID, Eye category, Age, Sex, Stage
    Quality Assessment.csv                      Eye ID, Image ID, ... (not read)

Label colours map exactly (any other colour is an error naming the file): (0,0,0) -> 0
background, (0,255,0) -> 1 retina, (255,255,0) -> 2 choroid, (0,0,255) -> 3 cyst/edema,
(255,0,0) -> 4 macular hole. One volume per eye (``eye_<eye_id>``); the subject is the patient
of the demographics file (``patient_<id>``), so the two eyes of a patient stay together. The
release holds no spacing (see the config).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from octseg.data.base import BScanRecord
from octseg.data.prepared import PreparedWriter, PrepareSummary
from octseg.data.release import Release, join

__all__ = [
    "CLASS_NAMES",
    "COLOURS",
    "DEMOGRAPHICS",
    "find_release",
    "prepare_oimhs",
    "read_demographics",
    "read_eye",
    "split_specs",
    "split_composite",
]

CLASS_NAMES = ("background", "retina", "choroid", "cyst", "macular_hole")
#: Label colour (R, G, B) -> OCTSeg label.
COLOURS = {(0, 0, 0): 0, (0, 255, 0): 1, (255, 255, 0): 2, (0, 0, 255): 3, (255, 0, 0): 4}
DEMOGRAPHICS = "Demographics of the participants.csv"
CITATION = "Ye et al., Scientific Data 10:769, 2023"
_LAYOUT = f"Images/<eye_id>/<k>.png + {DEMOGRAPHICS}"
_WHAT = f"the OIMHS release folder or .zip holding Images/ and {DEMOGRAPHICS!r}"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SCAN = re.compile(r"^(\d+)\.png$")


def _id(prefix: str, value: str) -> str:
    value = value.strip()
    return f"{prefix}_{int(value)}" if value.isdigit() else f"{prefix}_{_SAFE.sub('-', value)}"


def find_release(release: Release) -> str:
    """The folder of a release holding ``Images/`` and the demographics file.

    Raises:
        ValueError: if the release is ``Images`` or an eye folder (wrong level), or holds no
            release (or two) within two levels.
    """
    top = release.children("")
    if release.basename("") == "Images" or any(_SCAN.match(release.basename(n)) for n in top):
        raise ValueError(
            f"{release.source} is the Images folder or one eye's folder; pass the folder (or "
            f"archive) that holds Images/ and {DEMOGRAPHICS!r} ({_LAYOUT})."
        )
    found = release.find_folders(
        lambda f: "OIMHS" if release.is_dir(join(f, "Images")) else None,
        2,
        "OIMHS release",
        _LAYOUT,
    )
    return found["OIMHS"]


def read_demographics(release: Release, name: str) -> dict[str, str]:
    """``{eye id: patient id}`` from the demographics CSV (columns ``Patient ID``, ``Eye ID``).

    Raises:
        ValueError: naming the file, for missing columns or an eye listed twice.
    """
    where = release.where(name)
    reader = csv.DictReader(io.StringIO(release.read_bytes(name).decode("utf-8-sig")))
    columns = [c.strip() for c in reader.fieldnames or []]
    if "Patient ID" not in columns or "Eye ID" not in columns:
        raise ValueError(f"{where}: columns {columns}; expected 'Patient ID' and 'Eye ID'.")
    eyes: dict[str, str] = {}
    for row in reader:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not row["Eye ID"]:
            continue
        if row["Eye ID"] in eyes:
            raise ValueError(f"{where}: Eye ID {row['Eye ID']!r} is listed twice.")
        eyes[row["Eye ID"]] = row["Patient ID"]
    return eyes


def split_composite(rgb: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Splits a composite ``[H, 1024, 3]`` into the grey B-scan (left half) and the labels
    mapped from the colours of the right half.

    Raises:
        ValueError: naming the file, for another width, a colour B-scan or an unknown colour.
    """
    if rgb.ndim != 3 or rgb.shape[1] != 1024 or rgb.shape[2] < 3:
        raise ValueError(
            f"{where}: {rgb.shape}; expected a colour composite 1024 columns wide (left 512 the "
            "B-scan, right 512 the label map)."
        )
    left, right = rgb[:, :512, :3], rgb[:, 512:, :3]
    if not ((left[..., 0] == left[..., 1]) & (left[..., 1] == left[..., 2])).all():
        raise ValueError(f"{where}: the left half (the B-scan) is not grey.")
    code = (right[..., 0].astype(np.int32) << 16) | (right[..., 1].astype(np.int32) << 8)
    code |= right[..., 2]
    labels = np.full(code.shape, 255, np.uint8)
    for (r, g, b), label in COLOURS.items():
        labels[code == (r << 16 | g << 8 | b)] = label
    unknown = np.unique(right[labels == 255].reshape(-1, 3), axis=0)
    if unknown.size:
        raise ValueError(
            f"{where}: label colours {[tuple(int(v) for v in c) for c in unknown[:5]]} are not "
            f"among the documented ones {list(COLOURS)}."
        )
    return np.ascontiguousarray(left[..., 0]), labels


def read_eye(
    release: Release, folder: str, volume_id: str, subject_id: str
) -> tuple[list[BScanRecord], dict[str, Any]]:
    """Reads one eye's composites into records.

    Raises:
        ValueError: naming the file, for an eye without B-scans or a bad composite.
    """
    scans = sorted(
        (int(m.group(1)), n)
        for n in release.children(folder)
        if (m := _SCAN.match(release.basename(n)))
    )
    if not scans:
        raise ValueError(f"{release.where(folder)} holds no <k>.png composite.")
    records = []
    for k, name in scans:
        where = release.where(name)
        img = release.read_image(name, "composite")
        if img.mode not in ("RGB", "RGBA", "P"):
            raise ValueError(f"{where}: image mode {img.mode!r}; expected a colour composite.")
        image, mask = split_composite(np.array(img.convert("RGB")), where)
        records.append(BScanRecord(image, mask, f"{volume_id}_{k:03d}", volume_id, k, None,
                                   subject_id))  # fmt: skip
    return records, {"eye_id": release.basename(folder), "source": release.where(folder)}


def prepare_oimhs(
    source: str | Path, out_dir: str | Path, overwrite: bool = False
) -> PrepareSummary:
    """Prepares OIMHS into ``out_dir`` (``<paths.data_dir>/oimhs``).

    Args:
        source: the release folder or archive.
        out_dir: output folder.
        overwrite: replace a folder prepared with other settings.

    Returns:
        The summary; eyes listed in the demographics file without an image folder are listed
        as missing.

    Raises:
        FileNotFoundError, ValueError: naming the file at fault (an eye folder absent from the
        demographics file, whose patient is then unknown, is an error).
    """
    with Release(source, _WHAT) as release:
        root = find_release(release)
        demographics, images = join(root, DEMOGRAPHICS), join(root, "Images")
        if not release.exists(demographics):
            raise ValueError(
                f"{release.where(demographics)} is missing; it names each eye's patient."
            )
        patients = read_demographics(release, demographics)
        eyes = {release.basename(n): n for n in release.children(images) if release.is_dir(n)}
        unknown = sorted(set(eyes) - set(patients))
        if unknown:
            raise ValueError(
                f"Eye folders {unknown[:10]} in {release.where(images)} are not in "
                f"{DEMOGRAPHICS}; their patients are unknown (patient-wise splits need them)."
            )
        writer = PreparedWriter(out_dir, "oimhs", {}, len(CLASS_NAMES), overwrite=overwrite)
        by_id = {_id("eye", e): e for e in sorted(eyes, key=lambda e: (len(e), e))}
        writer.write_volumes(
            by_id,
            lambda v: read_eye(release, eyes[by_id[v]], v, _id("patient", patients[by_id[v]])),
        )
        missing = [
            _id("eye", e) for e in sorted(set(patients) - set(eyes), key=lambda e: (len(e), e))
        ]
        return writer.finish(missing=missing)


def split_specs(patients: Sequence[int] = tuple(range(1, 120))) -> dict[str, dict[str, Any]]:
    """The published OIMHS split, by patient (no official split exists).

    ``default``: patients by number (``patient_<n>``, 1..119, as the demographics file numbers
    them, unconfirmed): ``n % 10`` in {0, 5} test, 3 validation, the rest train (70/10/20).
    """
    ids = [(n, f"patient_{n}") for n in patients]
    return {
        "default": {
            "dataset": "oimhs",
            "source": CITATION,
            "unit": "subject",
            "protocol": "default",
            "description": "Rule-based by patient number n (1..119, unconfirmed): n % 10 in "
            "{0, 5} test, n % 10 == 3 validation, the rest train.",
            "folds": [
                {
                    "fold": 0,
                    "train": [i for n, i in ids if n % 10 not in (0, 3, 5)],
                    "val": [i for n, i in ids if n % 10 == 3],
                    "test": [i for n, i in ids if n % 10 in (0, 5)],
                }
            ],
        }
    }
