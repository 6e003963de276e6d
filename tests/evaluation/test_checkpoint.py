"""Checkpoint handling: loading errors, resume overrides, compatibility checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from octseg.evaluation.checkpoint import (
    check_resume_compatible,
    load_checkpoint,
    resume_overrides,
    run_dir_of,
)
from octseg.training import resume_argv

STORED = {
    "model": {"_target_": "SegModule", "net": {"_target_": "UNet", "base_channels": 16}},
    "dataset": {"name": "duke", "split": "ynet", "fold": 0},
    "loss": {"_target_": "Objective", "terms": ["dice", "ce"]},
    "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.003},
    "paths": {"output_dir": "/elsewhere/run"},
}


def _save(tmp_path: Path, overrides: list[str]) -> Path:
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "octseg_config": STORED, "octseg_overrides": overrides}, path)
    return path


def test_resume_recomposes_stored_overrides_with_the_users_on_top(tmp_path: Path) -> None:
    ckpt = _save(
        tmp_path,
        [
            "experiment=duke_cpu",
            "paths.data_dir=../shared/datasets",
            "trainer.max_epochs=5",
            "ckpt_path=old.ckpt",
            "seed=3",
        ],
    )
    args = resume_argv([f"ckpt_path={ckpt}", "trainer.max_epochs=9", "--cfg", "job"])
    assert args == [
        "--cfg", "job",
        "experiment=duke_cpu", "paths.data_dir=../shared/datasets", "seed=3",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"ckpt_path={ckpt}", "trainer.max_epochs=9",
    ]  # fmt: skip
    # No checkpoint, or a multirun: unchanged.
    assert resume_argv(["model=unet"]) == ["model=unet"]
    assert resume_argv(["-m", f"ckpt_path={ckpt}"]) == ["-m", f"ckpt_path={ckpt}"]


def test_run_dir_follows_a_moved_run_folder(tmp_path: Path) -> None:
    ckpt = _save(tmp_path, [])
    assert run_dir_of(ckpt, load_checkpoint(ckpt)) == tmp_path / "run"
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(ckpt.read_bytes())
    assert run_dir_of(loose, load_checkpoint(loose)) == Path("/elsewhere/run")
    assert resume_overrides(loose, [])[-1] == "hydra.run.dir=/elsewhere/run"


def test_load_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.ckpt: no such file"):
        load_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.ckpt could not be read"):
        load_checkpoint(tmp_path / "bad.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="not an OCTSeg training checkpoint"):
        load_checkpoint(tmp_path / "foreign.ckpt")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("dataset.name", "retouch", "dataset: checkpoint 'duke', now 'retouch'"),
        ("dataset.split", "relaynet", "dataset.split"),
        ("dataset.fold", 2, "dataset.fold"),
        ("model.net.base_channels", 32, "model: checkpoint"),
        ("loss.terms", ["ce"], "loss: checkpoint"),
        ("unlabelled", {"name": "kermany"}, "unlabelled: checkpoint None, now 'kermany'"),
    ],
)
def test_resume_with_a_changed_setup_is_refused_unless_allowed(path, value, message) -> None:
    import copy

    changed = copy.deepcopy(STORED)
    node = changed
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_resume_compatible(STORED, changed, "x.ckpt")
    check_resume_compatible(STORED, {**changed, "resume_allow_changes": True}, "x.ckpt")
    check_resume_compatible(STORED, copy.deepcopy(STORED), "x.ckpt")  # unchanged: fine


def test_another_optimizer_is_always_refused() -> None:
    changed = {
        **STORED,
        "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1},
        "resume_allow_changes": True,
    }
    with pytest.raises(ValueError, match="another optimizer"):
        check_resume_compatible(STORED, changed, "x.ckpt")
    # Another learning rate is no change of setup.
    check_resume_compatible(
        STORED, {**STORED, "optimizer": {**STORED["optimizer"], "lr": 1.0}}, "x.ckpt"
    )
