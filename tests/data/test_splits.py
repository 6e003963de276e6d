"""Split rules: rotating cross-validation folds, release-part splits and their checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octseg.data.splits import load_split, partition, resolve_release_parts, rotating_folds


def test_rotating_folds_test_one_group_and_validate_on_the_next() -> None:
    folds = rotating_folds({"a": 0, "b": 0, "c": 1, "d": 2}, 3)
    assert folds[0] == {"fold": 0, "train": ["d"], "val": ["c"], "test": ["a", "b"]}
    assert folds[2] == {"fold": 2, "train": ["c"], "val": ["a", "b"], "test": ["d"]}
    assert sorted(n for f in folds for n in f["test"]) == ["a", "b", "c", "d"]


def _split(tmp_path: Path, **spec: object) -> dict:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"unit": "subject", **spec}))
    return load_split(str(path))


def test_release_part_split_resolves_to_subjects_and_refuses_leaks(tmp_path: Path) -> None:
    info = _split(tmp_path, rule="release_part", folds=[{"train": ["train"], "test": ["test"]}])
    subjects, volumes = ["p1", "p1", "p2", "p3"], ["v1", "v1", "v2", "v3"]
    resolved = resolve_release_parts(info, subjects, volumes, ["train", "train", "test", "x"], "d")
    assert (resolved["train"], resolved["val"], resolved["test"]) == (["p1"], [], ["p2"])
    assert partition(subjects, volumes, resolved, "d")["train"] == [0, 1]
    with pytest.raises(ValueError, match=r"d: subjects in several release parts \{'p1'"):
        resolve_release_parts(info, subjects, volumes, ["train", "test", "test", "x"], "d")


def test_unknown_rule_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has rule 'by_date'; known: 'release_part'"):
        _split(tmp_path, rule="by_date", folds=[{"train": ["a"]}])
    assert _split(tmp_path, folds=[{"train": ["a"]}])["rule"] is None
