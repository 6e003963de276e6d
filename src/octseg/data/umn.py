"""UMN DME (Rashno et al., IEEE TBME 2018) and UMN AMD (Rashno et al., PLoS ONE 2017): one
MATLAB file per dataset to OCTSeg's prepared layout (:mod:`octseg.data.prepared`).

Release: ``UMNDataset.mat`` (DME) or ``UMN_Dataset.mat`` (AMD), alone or in a folder/archive,
MATLAB v5 with ``AllSubjects`` (1, n) cells of uint8 B-scan stacks (496, 1024, 25) and
``ManualFluid1``/``ManualFluid2`` (1, m) cells of the same size, 0 = no fluid, 1 = fluid, one
cell per grader and subject. DME has 30 subjects of which the last has no masks (m = 29): it is
prepared as an unlabelled volume, which no split names. Subjects are ``Subject_01`` ..
``Subject_30`` in cell order; B-scan ``k`` is the k-th slice of the third axis (order within the
volume unconfirmed). Labels 0 background, 1 fluid, exactly as released. Spacing is not in the
file (Spectralis assumed, unconfirmed): volumes carry none; the config's value applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from octseg.data.base import BScanRecord
from octseg.data.prepared import PreparedWriter, PrepareSummary
from octseg.data.release import Release, load_mat

__all__ = ["RELEASES", "prepare_umn", "prepare_umn_amd", "prepare_umn_dme"]

#: per dataset: the release file name(s) and the number of subjects of the full release
RELEASES: dict[str, dict[str, Any]] = {
    "umn_dme": {"files": ("UMNDataset.mat",), "subjects": 30},
    "umn_amd": {"files": ("UMN_Dataset.mat",), "subjects": 24},
}
_EXPECTED = "'AllSubjects' and 'ManualFluid<grader>' cell arrays (1, n) of (496, 1024, 25) stacks"


def _find_mat(source: str | Path, dataset: str) -> tuple[Release, str]:
    files = RELEASES[dataset]["files"]
    what = f"the {dataset} release: {' or '.join(files)}, or a folder or archive holding it"
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".mat":
        return Release(path.parent, what), path.name
    release = Release(path, what)
    hits = [n for n in release.names if Path(n).name.lower() in {f.lower() for f in files}]
    if len(hits) != 1:
        found = (
            ""
            if hits
            else f"; .mat files there: {[n for n in release.names if n.endswith('.mat')][:5]}"
        )
        raise FileNotFoundError(
            f"{release.source} holds {len(hits)} copies of {' / '.join(files)} "
            f"({hits}){found}; expected exactly one ({what})."
        )
    return release, hits[0]


def _cells(value: Any, where: str, key: str) -> list[Any]:
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise ValueError(
            f"{where}: '{key}' is {getattr(value, 'dtype', type(value))} "
            f"{getattr(value, 'shape', '')}, expected a cell array (1, n) of B-scan stacks."
        )
    return list(value.ravel())


def prepare_umn(
    dataset: str, source: str | Path, out_dir: str | Path, overwrite: bool = False, grader: int = 1
) -> PrepareSummary:
    """Prepares UMN DME or AMD (module docstring) into ``out_dir``.

    Args:
        dataset: ``umn_dme`` or ``umn_amd``.
        source: the ``.mat`` file, or a folder or archive holding it.
        out_dir: the prepared folder (``<paths.data_dir>/<dataset>``).
        overwrite: replace a folder prepared with other settings.
        grader: 1 or 2 (``ManualFluid1`` / ``ManualFluid2``).

    Returns:
        The summary; ``missing`` lists the subjects a short file lacks and, as
        ``Subject_XX (no masks)``, subjects prepared unlabelled.

    Raises:
        FileNotFoundError, ValueError: naming the file, variable and subject at fault.
    """
    if dataset not in RELEASES:
        raise ValueError(f"dataset must be one of {sorted(RELEASES)}, got {dataset!r}.")
    if grader not in (1, 2):
        raise ValueError(f"grader must be 1 or 2, got {grader!r} (--grader).")
    release, name = _find_mat(source, dataset)
    with release:
        return _prepare_umn(release, name, dataset, out_dir, overwrite, grader)


def _prepare_umn(
    release: Release, name: str, dataset: str, out_dir: str | Path, overwrite: bool, grader: int
) -> PrepareSummary:
    where = release.where(name)
    key = f"ManualFluid{grader}"
    data = load_mat(release, name, ["AllSubjects", key], _EXPECTED)
    stacks, masks = (
        _cells(data["AllSubjects"], where, "AllSubjects"),
        _cells(data[key], where, key),
    )
    if len(masks) > len(stacks):
        raise ValueError(
            f"{where}: '{key}' has {len(masks)} subjects but 'AllSubjects' {len(stacks)}."
        )
    writer = PreparedWriter(
        out_dir, dataset, {"grader": grader}, num_classes=2, overwrite=overwrite
    )
    expected = RELEASES[dataset]["subjects"]
    missing = [f"Subject_{s:02d}" for s in range(len(stacks) + 1, expected + 1)]
    subjects = [f"Subject_{index + 1:02d}" for index in range(len(stacks))]

    def mask_of(index: int) -> Any:
        return masks[index] if index < len(masks) and np.size(masks[index]) else None

    def read(subject: str) -> tuple[list[BScanRecord], dict[str, Any]]:
        index = subjects.index(subject)
        mask = mask_of(index)
        records = _subject_records(
            stacks[index], mask, subject, f"{where} subject {index + 1}", key
        )
        return records, {"grader": grader if mask is not None else None, "cell": index + 1}

    missing += [f"{s} (no masks)" for i, s in enumerate(subjects) if mask_of(i) is None]
    writer.write_volumes(subjects, read)
    return writer.finish(missing=missing)


def _subject_records(
    stack: Any, mask: Any, subject: str, where: str, key: str
) -> list[BScanRecord]:
    stack = np.asarray(stack)
    if stack.ndim == 2:  # MATLAB drops a trailing axis of length 1
        stack = stack[..., None]
    if stack.ndim != 3 or stack.dtype != np.uint8:
        raise ValueError(
            f"{where}: 'AllSubjects' cell is {stack.dtype} {stack.shape}, expected uint8 "
            "(rows, A-scans, B-scans) such as (496, 1024, 25)."
        )
    labels = None
    if mask is not None:
        mask = np.asarray(mask)
        mask = mask[..., None] if mask.ndim == 2 else mask
        if mask.shape != stack.shape:
            raise ValueError(
                f"{where}: '{key}' is {mask.shape} but the B-scans are {stack.shape}; they must "
                "be the same size."
            )
        values = np.unique(mask)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(
                f"{where}: '{key}' holds values {values[~np.isin(values, (0, 1))][:10].tolist()}; "
                "expected 0 (no fluid) and 1 (fluid) only."
            )
        labels = mask.astype(np.uint8)
    return [
        BScanRecord(
            np.ascontiguousarray(stack[:, :, k]),
            None if labels is None else np.ascontiguousarray(labels[:, :, k]),
            f"{subject}_{k:02d}",
            subject,
            k,
        )
        for k in range(stack.shape[2])
    ]


def prepare_umn_dme(
    source: str | Path, out_dir: str | Path, overwrite: bool = False, grader: int = 1
) -> PrepareSummary:
    """UMN DME (``UMNDataset.mat``): :func:`prepare_umn` with ``dataset="umn_dme"``."""
    return prepare_umn("umn_dme", source, out_dir, overwrite, grader)


def prepare_umn_amd(
    source: str | Path, out_dir: str | Path, overwrite: bool = False, grader: int = 1
) -> PrepareSummary:
    """UMN AMD (``UMN_Dataset.mat``): :func:`prepare_umn` with ``dataset="umn_amd"``."""
    return prepare_umn("umn_amd", source, out_dir, overwrite, grader)
