"""The labelled fraction of the training part (semi-supervised runs): which B-scans keep their
masks, by subject, deterministically, and what happens to the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from octseg.data.base import labelled_subset
from tests.data.test_base import VolumesModule, records, split_file

# Duke-like training part: 6 subjects of 11 B-scans, plus validation and test subjects.
SUBJECTS = [f"s{k}" for k in range(1, 7)]


def duke_like(tmp_path: Path, **kwargs) -> VolumesModule:
    volumes = [records(s, 11, 12, subject=s) for s in [*SUBJECTS, "v1", "t1"]]
    split = split_file(tmp_path, unit="subject", train=SUBJECTS, val=["v1"], test=["t1"])
    return VolumesModule(volumes, batch_size=4, split=split, **kwargs)


def _masked(dataset) -> list[bool]:
    return [m is not None for m in dataset.masks]


@pytest.mark.parametrize(
    ("fraction", "whole", "partial"),
    [(0.1, 0, 7), (0.25, 1, 6), (0.5, 3, 0), (1.0, 6, 0), (0.01, 0, 1)],
)
def test_counts_follow_the_documented_rounding(fraction: float, whole: int, partial: int) -> None:
    recs = [r for s in SUBJECTS for r in records(s, 11, 12, subject=s)]
    keep, info = labelled_subset(recs, fraction, seed=3)
    assert sum(keep) == info["labelled"] == 11 * whole + partial
    assert len(info["subjects"]) == whole
    assert (info["partial"] or {"bscans": 0})["bscans"] == partial
    # Whole subjects are wholly labelled; the partial subject's labelled B-scans are its first.
    for subject in info["subjects"]:
        assert all(k for r, k in zip(recs, keep, strict=True) if r.subject_id == subject)
    if info["partial"]:
        part = [k for r, k in zip(recs, keep, strict=True)
                if r.subject_id == info["partial"]["subject"]]  # fmt: skip
        assert part == [True] * partial + [False] * (11 - partial)
    touched = {r.subject_id for r, k in zip(recs, keep, strict=True) if k}
    assert len(touched) == whole + (partial > 0)


def test_the_subset_depends_on_the_seed_only() -> None:
    recs = [r for s in SUBJECTS for r in records(s, 11, 12, subject=s)]
    first = labelled_subset(recs, 0.5, seed=1)
    reordered = labelled_subset(list(reversed(recs)), 0.5, seed=1)
    assert reordered[1]["subjects"] == first[1]["subjects"]
    assert labelled_subset(recs, 0.5, seed=1) == first
    subsets = {tuple(sorted(labelled_subset(recs, 0.5, seed=s)[1]["subjects"])) for s in range(8)}
    assert len(subsets) > 1


def test_natively_unlabelled_scans_are_never_candidates() -> None:
    recs = records("a", 4, 12, subject="a") + records("b", 4, 12, labelled=False, subject="b")
    keep, info = labelled_subset(recs, 1.0)
    assert keep == [True] * 4 + [False] * 4 and info["labelled"] == 4


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, True])
def test_fractions_outside_the_unit_interval_are_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="labelled_fraction must be in"):
        labelled_subset(records("a", 2, 12), fraction)
    with pytest.raises(ValueError, match="labelled_fraction must be in"):
        VolumesModule([], labelled_fraction=fraction)


def test_unknown_unlabelled_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unlabelled must be one of"):
        VolumesModule([], unlabelled="ignore")


def test_keep_makes_unlabelled_samples_and_leaves_val_and_test_alone(tmp_path: Path) -> None:
    dm = duke_like(tmp_path, labelled_fraction=0.25, labelled_seed=5)
    dm.setup()
    train = dm.datasets["train"]
    assert len(train) == 66 and sum(_masked(train)) == 17
    assert all(_masked(dm.datasets["val"])) and all(_masked(dm.datasets["test"]))
    assert len(dm.datasets["val"]) == len(dm.datasets["test"]) == 11
    assert dm.split_info["labelled"]["labelled"] == 17
    unlabelled = [s for s in (train[i] for i in range(len(train))) if "mask" not in s]
    assert len(unlabelled) == 49
    labelled_subjects = {train.volume_ids[i] for i, m in enumerate(_masked(train)) if m}
    assert len(labelled_subjects) == 2  # one whole subject and the start of a second
    # Mixed batches carry the labelled flag.
    flags = [f for b in dm.train_dataloader() for f in b["labelled"].tolist()]
    assert sum(flags) <= 17 and len(flags) == 64  # drop_last: 16 batches of 4


def test_drop_keeps_the_labelled_subset_only(tmp_path: Path) -> None:
    kept = duke_like(tmp_path, labelled_fraction=0.25, labelled_seed=5)
    dropped = duke_like(tmp_path, labelled_fraction=0.25, labelled_seed=5, unlabelled="drop")
    kept.setup()
    dropped.setup()
    train = dropped.datasets["train"]
    assert len(train) == 17 and all(_masked(train))
    full = kept.datasets["train"]
    masked_ids = {c for c, m in zip(full.case_ids, _masked(full), strict=True) if m}
    assert set(train.case_ids) == masked_ids
    assert len(dropped.datasets["test"]) == 11


def test_default_keeps_every_mask(tmp_path: Path) -> None:
    dm = duke_like(tmp_path)
    dm.setup()
    assert all(_masked(dm.datasets["train"])) and "labelled" not in dm.split_info


def test_synthetic_datamodule_takes_the_labelled_fraction() -> None:
    from octseg.data.synthetic import SyntheticDataModule

    dm = SyntheticDataModule(num_train=8, num_val=2, num_test=2, height=64, width=32,
                             scans_per_volume=4, labelled_fraction=0.5, unlabelled="drop")
    dm.setup()
    train = dm.datasets["train"]
    assert len(train) == 4 and len(set(train.volume_ids)) == 1 and all(_masked(train))
    assert all(_masked(dm.datasets["val"])) and len(dm.datasets["test"]) == 2
