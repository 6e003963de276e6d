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
from octseg.data.release_tree import (
    ReleaseNode,
    child,
    find_dirs,
    open_release,
    read_image,
    stream_volumes,
)

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
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SCAN = re.compile(r"^(\d+)\.png$")


def _id(prefix: str, value: str) -> str:
    value = value.strip()
    return f"{prefix}_{int(value)}" if value.isdigit() else f"{prefix}_{_SAFE.sub('-', value)}"


def find_release(source: str | Path) -> ReleaseNode:
    """The release folder holding ``Images/`` and the demographics file.

    Raises:
        FileNotFoundError: if ``source`` is missing.
        ValueError: if ``source`` is ``Images`` or an eye folder (wrong level), or holds no
            release within two levels.
    """
    root = open_release(source)
    if root.name == "Images" or any(_SCAN.match(n.name) for n in root.iterdir()):
        raise ValueError(
            f"{source} is the Images folder or one eye's folder; pass the folder (or archive) "
            f"that holds Images/ and {DEMOGRAPHICS!r} ({_LAYOUT})."
        )
    found = find_dirs(root, lambda n: child(n, "Images") is not None, max_depth=2)
    if len(found) != 1:
        raise ValueError(
            f"Expected one OIMHS release ({_LAYOUT}) within two levels of {source}; found "
            f"{[str(f) for f in found]}."
        )
    return found[0]


def read_demographics(node: ReleaseNode) -> dict[str, str]:
    """``{eye id: patient id}`` from the demographics CSV (columns ``Patient ID``, ``Eye ID``).

    Raises:
        ValueError: naming the file, for missing columns or an eye listed twice.
    """
    text = node.read_bytes().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    if "Patient ID" not in columns or "Eye ID" not in columns:
        raise ValueError(f"{node}: columns {columns}; expected 'Patient ID' and 'Eye ID'.")
    eyes: dict[str, str] = {}
    for row in reader:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not row["Eye ID"]:
            continue
        if row["Eye ID"] in eyes:
            raise ValueError(f"{node}: Eye ID {row['Eye ID']!r} is listed twice.")
        eyes[row["Eye ID"]] = row["Patient ID"]
    return eyes


def split_composite(rgb: np.ndarray, node: ReleaseNode | str) -> tuple[np.ndarray, np.ndarray]:
    """Splits a composite ``[H, 1024, 3]`` into the grey B-scan (left half) and the labels
    mapped from the colours of the right half.

    Raises:
        ValueError: naming the file, for another width, a colour B-scan or an unknown colour.
    """
    if rgb.ndim != 3 or rgb.shape[1] != 1024 or rgb.shape[2] < 3:
        raise ValueError(
            f"{node}: {rgb.shape}; expected a colour composite 1024 columns wide (left 512 the "
            "B-scan, right 512 the label map)."
        )
    left, right = rgb[:, :512, :3], rgb[:, 512:, :3]
    if not ((left[..., 0] == left[..., 1]) & (left[..., 1] == left[..., 2])).all():
        raise ValueError(f"{node}: the left half (the B-scan) is not grey.")
    code = (right[..., 0].astype(np.int32) << 16) | (right[..., 1].astype(np.int32) << 8)
    code |= right[..., 2]
    labels = np.full(code.shape, 255, np.uint8)
    for (r, g, b), label in COLOURS.items():
        labels[code == (r << 16 | g << 8 | b)] = label
    unknown = np.unique(right[labels == 255].reshape(-1, 3), axis=0)
    if unknown.size:
        raise ValueError(
            f"{node}: label colours {[tuple(int(v) for v in c) for c in unknown[:5]]} are not "
            f"among the documented ones {list(COLOURS)}."
        )
    return np.ascontiguousarray(left[..., 0]), labels


def read_eye(
    folder: ReleaseNode, volume_id: str, subject_id: str
) -> tuple[list[BScanRecord], dict[str, Any]]:
    """Reads one eye's composites into records.

    Raises:
        ValueError: naming the file, for an eye without B-scans or a bad composite.
    """
    scans = sorted((int(m.group(1)), n) for n in folder.iterdir() if (m := _SCAN.match(n.name)))
    if not scans:
        raise ValueError(f"{folder} holds no <k>.png composite.")
    records = []
    for k, node in scans:
        img = read_image(node, "composite")
        if img.mode not in ("RGB", "RGBA", "P"):
            raise ValueError(f"{node}: image mode {img.mode!r}; expected a colour composite.")
        rgb = np.array(img.convert("RGB"))
        image, mask = split_composite(rgb, node)
        records.append(BScanRecord(image, mask, f"{volume_id}_{k:03d}", volume_id, k, None,
                                   subject_id))  # fmt: skip
    return records, {"eye_id": folder.name, "source": str(folder)}


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
    root = find_release(source)
    demographics = child(root, DEMOGRAPHICS)
    if demographics is None:
        raise ValueError(f"{root / DEMOGRAPHICS} is missing; it names each eye's patient.")
    patients = read_demographics(demographics)
    eyes = {n.name: n for n in (root / "Images").iterdir() if n.is_dir()}
    unknown = sorted(set(eyes) - set(patients))
    if unknown:
        raise ValueError(
            f"Eye folders {unknown[:10]} in {root / 'Images'} are not in {DEMOGRAPHICS}; their "
            "patients are unknown (patient-wise splits need them)."
        )
    writer = PreparedWriter(out_dir, "oimhs", {}, len(CLASS_NAMES), overwrite=overwrite)
    by_id = {_id("eye", e): e for e in sorted(eyes, key=lambda e: (len(e), e))}
    stream_volumes(
        writer,
        list(by_id),
        lambda v: read_eye(eyes[by_id[v]], v, _id("patient", patients[by_id[v]])),
    )
    missing = [_id("eye", e) for e in sorted(set(patients) - set(eyes), key=lambda e: (len(e), e))]
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
