"""Published split files (``splits/<dataset>/<protocol>.json``) and their application.

A split file lists, per fold, the subjects or volumes of ``train``, ``val`` and ``test``::

    {"protocol": "ynet", "unit": "subject",          # or "volume"
     "folds": [{"fold": 0, "train": [...], "val": [...], "test": [...]}]}

``unit`` says whether the names are subject ids or volume ids (default ``subject``). Splitting
is always by subject or volume, never by B-scan; a split by volume that sends two volumes of one
subject to different parts is refused (the subject would leak from training into test).

A split file with ``"rule": "release_part"`` names release parts (the release's own ``train`` /
``test`` folders) instead: :func:`resolve_release_parts` turns them into the subjects (or
volumes) found in those parts, and refuses a subject found in two of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from octseg.utils.config import repo_root

__all__ = [
    "PARTS",
    "RELEASE_PART_RULE",
    "UNITS",
    "default_split_dir",
    "load_split",
    "partition",
    "resolve_release_parts",
    "rotating_folds",
]

PARTS = ("train", "val", "test")
UNITS = ("subject", "volume")
#: ``rule`` of a split file whose names are release parts rather than subjects or volumes.
RELEASE_PART_RULE = "release_part"


def default_split_dir(dataset: str) -> Path:
    """``<repo>/splits/<dataset>`` (:func:`octseg.utils.config.repo_root`)."""
    return repo_root() / "splits" / dataset


def load_split(
    split: str,
    fold: int = 0,
    split_dir: str | Path | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Reads a split file and returns the names of one fold.

    Args:
        split: a protocol name looked up as ``<split_dir>/<split>.json``, or a path to a JSON
            split file.
        fold: which entry of the file's ``folds`` list.
        split_dir: folder of named split files; default ``<repo>/splits/<dataset>``.
        dataset: the dataset's folder name under ``splits/`` (used when ``split_dir`` is None).

    Returns:
        ``{"train": [...], "val": [...], "test": [...], "file": path, "protocol": name,
        "unit": "subject" | "volume"}``.

    Raises:
        FileNotFoundError: unknown split; ValueError: a damaged file, a bad fold, an unknown
        unit or a name in two parts.
    """
    path = Path(split)
    if path.suffix != ".json":
        if split_dir is None and dataset is None:
            raise ValueError(
                f"dataset.split={split!r} is a protocol name, but no split folder is known; "
                "pass split_dir (dataset.datamodule.split_dir) or a path to a .json file."
            )
        path = Path(split_dir or default_split_dir(str(dataset))) / f"{split}.json"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise FileNotFoundError(
            f"Split file {path} not found (dataset.split={split!r}); known splits in "
            f"{path.parent}: {known}. Create one with scripts/make_splits.py."
        )
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"Split file {path} is not valid JSON ({err}); fix or re-create it."
        ) from err
    unit = spec.get("unit", "subject")
    if unit not in UNITS:
        raise ValueError(f"{path} has unit {unit!r}; expected one of {list(UNITS)}.")
    folds = spec.get("folds", [])
    if not 0 <= fold < len(folds):
        raise ValueError(
            f"dataset.fold={fold} but {path} has {len(folds)} fold(s); use 0..{len(folds) - 1}."
        )
    entry = folds[fold]
    parts = {k: [str(name) for name in entry.get(k, [])] for k in PARTS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(parts[a]) & set(parts[b]))
        if shared:
            raise ValueError(f"{path} fold {fold}: {unit}s {shared} are in both {a} and {b}.")
    rule = spec.get("rule")
    if rule not in (None, RELEASE_PART_RULE):
        raise ValueError(f"{path} has rule {rule!r}; known: {RELEASE_PART_RULE!r} (or none).")
    return {
        **parts,
        "file": str(path),
        "protocol": spec.get("protocol", path.stem),
        "unit": unit,
        "rule": rule,
    }


def rotating_folds(groups: Mapping[str, int], k: int) -> list[dict[str, Any]]:
    """The ``k`` folds of a cross-validation over groups of names: fold f tests group f,
    validates on group f+1 (wrapping) and trains on the rest.

    Args:
        groups: ``{name: group in 0..k-1}``; each part lists its names in this order.
        k: the number of folds (and groups).

    Returns:
        ``[{"fold": f, "train": [...], "val": [...], "test": [...]}]``, as split files hold.
    """
    folds = []
    for f in range(k):
        test = [name for name, g in groups.items() if g == f]
        val = [name for name, g in groups.items() if g == (f + 1) % k]
        train = [name for name, g in groups.items() if g not in (f, (f + 1) % k)]
        folds.append({"fold": f, "train": train, "val": val, "test": test})
    return folds


def resolve_release_parts(
    info: dict[str, Any],
    subject_ids: Sequence[str],
    volume_ids: Sequence[str],
    release_parts: Sequence[str],
    source: str,
) -> dict[str, Any]:
    """Turns a ``release_part`` split (its names are release parts) into subject or volume
    names, as :func:`partition` expects.

    Args:
        info: a :func:`load_split` result with ``rule`` ``release_part``.
        subject_ids: the subject of each B-scan.
        volume_ids: the volume of each B-scan.
        release_parts: the release part each B-scan came from.
        source: where the B-scans come from, for error messages.

    Raises:
        ValueError: if a subject (or volume) is found in several release parts (it would leak).
    """
    keys = subject_ids if info["unit"] == "subject" else volume_ids
    part_of_release = {name: part for part in PARTS for name in info[part]}
    parts: dict[str, set[str]] = {part: set() for part in PARTS}
    found_in: dict[str, set[str]] = {}
    for key, release_part in zip(keys, release_parts, strict=True):
        found_in.setdefault(key, set()).add(release_part)
        if release_part in part_of_release:
            parts[part_of_release[release_part]].add(key)
    shared = {k: sorted(v) for k, v in found_in.items() if len(v) > 1}
    if shared:
        raise ValueError(
            f"{source}: {info['unit']}s in several release parts "
            f"{dict(list(shared.items())[:5])} ({len(shared)} in all); the split {info['file']} "
            "keeps release parts apart, so they would leak. Use a split file that lists subjects."
        )
    return {**info, **{part: sorted(names) for part, names in parts.items()}}


def partition(
    subject_ids: Sequence[str], volume_ids: Sequence[str], info: dict[str, Any], source: str
) -> dict[str, list[int]]:
    """Assigns B-scans to the parts of a split read by :func:`load_split`.

    Args:
        subject_ids: the subject of each B-scan.
        volume_ids: the volume of each B-scan.
        info: a :func:`load_split` result.
        source: where the B-scans come from, for error messages (e.g. the data folder).

    Returns:
        ``{"train": [indices], "val": [...], "test": [...]}``; B-scans whose subject/volume
        the split does not name are in no part.

    Raises:
        ValueError: if the split names subjects/volumes the data does not hold, or (``unit``
        volume) puts volumes of one subject in two parts.
    """
    keys = subject_ids if info["unit"] == "subject" else volume_ids
    present = sorted(set(keys))
    wanted = [name for part in PARTS for name in info[part]]
    missing = sorted(set(wanted) - set(present))
    if missing:
        raise ValueError(
            f"Split {info['file']} names {info['unit']}s {missing} that {source} does not hold "
            f"(it has {present}); check paths.data_dir or dataset.split."
        )
    part_of = {name: part for part in PARTS for name in info[part]}
    indices: dict[str, list[int]] = {part: [] for part in PARTS}
    subject_parts: dict[str, set[str]] = {}
    for i, key in enumerate(keys):
        part = part_of.get(key)
        if part is not None:
            indices[part].append(i)
            subject_parts.setdefault(subject_ids[i], set()).add(part)
    leaks = {s: sorted(p) for s, p in subject_parts.items() if len(p) > 1}
    if leaks:
        raise ValueError(
            f"Split {info['file']} puts volumes of one subject in several parts {leaks}; a "
            "subject must stay in one part (list whole subjects, or use unit: subject)."
        )
    return indices
