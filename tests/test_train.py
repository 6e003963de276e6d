"""End-to-end runs of train.py's `train()` on tiny synthetic data (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from train import train


def _read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def test_train_writes_checkpoints_config_and_metrics(make_cfg, capsys) -> None:
    cfg = make_cfg()
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    saved = _read_metrics(run)
    assert "test/dice" in saved and 0.0 <= saved["test/dice"] <= 1.0
    assert saved["test/dice"] == pytest.approx(metrics["test/dice"])
    # Per-class values for every foreground class of the dataset.
    for name in cfg.dataset.class_names[1:]:
        assert f"test/dice/{name}" in saved
    out = capsys.readouterr().out
    assert "test metrics per class" in out and "RNFL" in out
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    assert ckpt["octseg_config"]["dataset"]["name"] == cfg.dataset.name
    assert ckpt["octseg_config"]["model"]["net"]["_target_"] == cfg.model.net._target_


def test_resume_continues_from_last_checkpoint(make_cfg) -> None:
    first = make_cfg("trainer.max_epochs=1", "test=false", subdir="first")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    step_after_first = torch.load(last, weights_only=False)["global_step"]
    second = make_cfg("trainer.max_epochs=2", f"ckpt_path={last}", "test=false", subdir="second")
    train(second)
    resumed_path = Path(second.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = torch.load(resumed_path, weights_only=False)
    assert resumed["epoch"] == 1
    assert resumed["global_step"] == 2 * step_after_first
    # Optimizer state travelled with the checkpoint (Adam has per-parameter moments).
    assert resumed["optimizer_states"][0]["state"]


def test_deterministic_runs_give_identical_metrics(make_cfg) -> None:
    args = ("trainer.deterministic=true", "seed=7", "trainer.max_epochs=1")
    a = train(make_cfg(*args, subdir="a"))
    b = train(make_cfg(*args, subdir="b"))
    keys = [k for k in a if k.startswith("test/")]
    assert keys
    for k in keys:
        if math.isnan(a[k]):
            assert math.isnan(b[k]), k
        else:
            assert a[k] == b[k], k


def test_model_dataset_class_mismatch_is_caught_before_training(make_cfg) -> None:
    cfg = make_cfg("model.net.num_classes=5")
    with pytest.raises(ValueError, match=r"predicts 5 classes but dataset.num_classes=10"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_model_dataset_channel_mismatch_is_caught_before_training(make_cfg) -> None:
    with pytest.raises(ValueError, match=r"dataset.in_channels=1"):
        train(make_cfg("model.net.in_channels=3"))


class _Interrupt(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= 3:
            raise KeyboardInterrupt


def test_interrupt_leaves_a_resumable_last_checkpoint(make_cfg, monkeypatch) -> None:
    from octseg.utils import instantiators

    original = instantiators.instantiate_callbacks
    monkeypatch.setattr("train.instantiate_callbacks", lambda c: original(c) + [_Interrupt()])
    cfg = make_cfg("trainer.max_epochs=5", "test=false")
    with pytest.raises(SystemExit):  # Lightning stops gracefully, then exits with status 1
        train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 3 and "octseg_config" in ckpt
