"""End-to-end runs of train.py's `train()` on tiny synthetic data (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from octseg.training import train


def _read_metrics(run_dir: Path) -> dict[str, float]:
    report = json.loads((run_dir / "metrics.json").read_text())
    return {f"test/{k}": v for k, v in report["dataset"].items()}


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


@pytest.mark.parametrize("model", ["unet", "sd_layernet"])
def test_an_image_level_set_is_refused_before_a_module_that_needs_masks(
    make_cfg, tmp_path: Path, model: str
) -> None:
    from octseg.data.kermany import prepare_kermany
    from tests.data.image_level_fixtures import write_release

    files = ["OCT2017/train/NORMAL/NORMAL-1-1.jpeg", "OCT2017/test/CNV/CNV-2-1.jpeg"]
    prepare_kermany(write_release(tmp_path / "release", files), tmp_path / "data" / "kermany")
    cfg = make_cfg(f"model={model}", "dataset=kermany", f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(ValueError, match=r"dataset=kermany holds image-level .* trains on label"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


@pytest.mark.parametrize(
    "setting", ["+dataset.datamodule.labelled_fraction=0.5", "+dataset@unlabelled=kermany"]
)
def test_unlabelled_training_scans_are_refused_for_a_supervised_module(
    make_cfg, tmp_path: Path, setting: str
) -> None:
    from octseg.data.kermany import prepare_kermany
    from tests.data.image_level_fixtures import write_release

    files = ["OCT2017/train/NORMAL/NORMAL-1-1.jpeg", "OCT2017/test/CNV/CNV-2-1.jpeg"]
    prepare_kermany(write_release(tmp_path / "release", files), tmp_path / "data" / "kermany")
    cfg = make_cfg("model=unet", setting, f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(ValueError, match=r"holds unlabelled B-scans .* learns from label maps"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_an_unlabelled_key_that_is_no_dataset_config_is_refused(make_cfg) -> None:
    cfg = make_cfg("model=sd_layernet", "+unlabelled.name=kermany")
    with pytest.raises(ValueError, match=r"unlabelled must be a dataset config .* \+dataset@"):
        train(cfg)


class _Interrupt(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= 3:
            raise KeyboardInterrupt


def test_interrupt_leaves_a_resumable_last_checkpoint(make_cfg, monkeypatch) -> None:
    from octseg.utils import instantiators

    original = instantiators.instantiate_callbacks
    monkeypatch.setattr(
        "octseg.training.instantiate_callbacks", lambda c: original(c) + [_Interrupt()]
    )
    cfg = make_cfg("trainer.max_epochs=5", "test=false")
    with pytest.raises(SystemExit):  # Lightning stops gracefully, then exits with status 1
        train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["global_step"] == 3 and "octseg_config" in ckpt


# --------------------------------------------------------------------------- the house rules
class ToyModule(pl.LightningModule):
    """Not a SegModule: a per-image intensity regressor with its own test_step."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.lr = lr
        self.scale = torch.nn.Parameter(torch.zeros(1))

    def _loss(self, batch) -> torch.Tensor:
        target = batch["image"].mean(dim=(1, 2, 3))
        return ((self.scale * torch.ones_like(target) - target) ** 2).mean()

    def training_step(self, batch, batch_idx) -> torch.Tensor:
        return self._loss(batch)

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val/dice", -self._loss(batch), batch_size=batch["image"].shape[0])

    def test_step(self, batch, batch_idx) -> None:
        self.log("test/mse", self._loss(batch), batch_size=batch["image"].shape[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_a_module_that_is_not_a_seg_module_trains_and_tests(make_cfg) -> None:
    cfg = make_cfg("~callbacks.log_overlays")
    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": "tests.test_train.ToyModule", "lr": 0.05})
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    report = json.loads((run / "metrics.json").read_text())
    assert report["format"] == "octseg-metrics"
    assert report["dataset"]["mse"] == pytest.approx(metrics["test/mse"])
    assert "val/dice" in report["run"]["training"]
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_training_report_equals_the_evaluation_report_format(make_cfg) -> None:
    cfg = make_cfg()
    train(cfg)
    run = Path(cfg.paths.output_dir)
    from octseg.evaluation import read_report

    report = read_report(run / "metrics.json")
    assert {"dataset", "volumes", "settings", "run"} <= set(report)
    assert report["run"]["best_checkpoint"].endswith("best.ckpt")
    for name in ("per_scan.csv", "boundaries.csv", "thickness.csv"):
        assert (run / name).is_file(), name


@pytest.mark.parametrize("budget", ["trainer.max_epochs=0", "trainer.max_steps=0"])
def test_zero_training_budget_is_refused(make_cfg, budget: str) -> None:
    cfg = make_cfg(budget)
    with pytest.raises(ValueError, match=budget.replace(".", r"\.") + " trains nothing"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_a_run_folder_owned_by_another_run_is_refused(make_cfg) -> None:
    from octseg.utils.run_folder import RunFolderInUseError

    train(make_cfg("test=false", subdir="shared"))
    second = make_cfg("test=false", "seed=3", subdir="shared")
    with pytest.raises(RunFolderInUseError, match="already belongs to another run"):
        train(second)
    saved = torch.load(
        Path(second.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False
    )
    assert saved["octseg_config"]["seed"] == 42  # the first run's files are untouched


def test_resume_with_another_dataset_or_optimizer_is_refused(make_cfg) -> None:
    first = make_cfg("test=false", subdir="first")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(
        ValueError, match=r"different setup: dataset: checkpoint 'synthetic_small'"
    ):
        train(
            make_cfg(
                "dataset=synthetic", f"ckpt_path={last}", "test=false", subdir="x", fast=False
            )
        )
    with pytest.raises(ValueError, match="another optimizer"):
        train(make_cfg("optimizer=sgd", f"ckpt_path={last}", "test=false", subdir="y"))
    # A refused resume writes nothing over the checkpoint it was given.
    assert last.read_bytes() == before


def test_failed_resume_does_not_write_a_last_checkpoint(make_cfg) -> None:
    first = make_cfg("test=false", subdir="first")
    train(first)
    good = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    broken = Path(first.paths.output_dir) / "broken.ckpt"
    ckpt = torch.load(good, weights_only=False)
    ckpt["state_dict"] = {k: v for k, v in list(ckpt["state_dict"].items())[:-2]}  # truncated
    torch.save(ckpt, broken)
    second = make_cfg("trainer.max_epochs=2", f"ckpt_path={broken}", "test=false", subdir="second")
    with pytest.raises(RuntimeError, match="Missing key"):
        train(second)
    assert not (Path(second.paths.output_dir) / "checkpoints" / "last.ckpt").exists()
    truncated = Path(first.paths.output_dir) / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="could not be read"):
        train(make_cfg(f"ckpt_path={truncated}", "test=false", subdir="third"))
    assert not (Path(first.paths.output_dir).parent / "third" / "checkpoints").exists()


class _Sigterm(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= 2:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_writes_last_checkpoint_and_exits_143(make_cfg, monkeypatch) -> None:
    from octseg.utils import instantiators

    original = instantiators.instantiate_callbacks
    monkeypatch.setattr(
        "octseg.training.instantiate_callbacks", lambda c: original(c) + [_Sigterm()]
    )
    cfg = make_cfg("trainer.max_epochs=5")
    with pytest.raises(SystemExit) as exit_info:
        train(cfg)
    assert exit_info.value.code == 143
    run = Path(cfg.paths.output_dir)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "metrics.json").exists()


@pytest.mark.slow
def test_cli_resume_recomposes_the_runs_own_overrides(tmp_path: Path) -> None:
    from tests.conftest import FAST_OVERRIDES
    from tests.test_wandb_ddp import _run_cli

    _run_cli([*FAST_OVERRIDES, "seed=5", "dataset.datamodule.width=96", "test=false"], tmp_path)
    (run,) = (tmp_path / "logs" / "train" / "runs").glob("*/*")
    last = run / "checkpoints" / "last.ckpt"
    steps = torch.load(last, weights_only=False)["global_step"]
    # Resume without repeating the overrides: same data, seed and folder, one more epoch.
    _run_cli([f"ckpt_path={last}", "trainer.max_epochs=2", "test=false"], tmp_path)
    assert list((tmp_path / "logs" / "train" / "runs").glob("*/*")) == [run]
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2 * steps
    assert ckpt["octseg_config"]["seed"] == 5
    assert ckpt["octseg_config"]["dataset"]["datamodule"]["width"] == 96
    assert ckpt["octseg_config"]["dataset"]["name"] == "synthetic_small"
    # Resuming onto another dataset is refused with a named error.
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    proc = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), f"ckpt_path={last}",
                           "dataset=synthetic"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode != 0
    assert "different setup: dataset: checkpoint 'synthetic_small', now 'synthetic'" in proc.stderr


def test_resume_from_an_epoch_end_is_exact(make_cfg) -> None:
    """Same data order, augmentation and training randomness as the uninterrupted run: the
    resumed run ends with bitwise the same weights."""
    common = ("trainer.deterministic=true", "seed=3", "test=false", "augmentation=light",
              "scheduler=none")  # a schedule that does not depend on max_epochs
    whole = make_cfg(*common, "trainer.max_epochs=2", subdir="whole")
    train(whole)
    half = make_cfg(*common, "trainer.max_epochs=1", subdir="half")
    train(half)
    last = Path(half.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = make_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={last}", subdir="resumed")
    train(resumed)

    def weights(cfg) -> dict[str, torch.Tensor]:
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return torch.load(path, weights_only=False)["state_dict"]

    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_of_a_step_budget_run_killed_after_an_epoch(make_cfg) -> None:
    """A run with a step budget (max_epochs=-1, as experiment=duke_cpu) killed after an epoch
    ended resumes from that epoch's last.ckpt. Early stopping used to check its metric at the
    restored epoch's end, before any validation of the resumed run, and stop the resume with
    'Early stopping conditioned on metric val/dice which is not available'."""
    probe = make_cfg("trainer.max_epochs=1", "test=false", subdir="probe")
    train(probe)
    per_epoch = torch.load(
        Path(probe.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False
    )["global_step"]
    budget = ("trainer.max_epochs=-1", f"trainer.max_steps={3 * per_epoch}", "test=false")
    # What a kill -9 during epoch 1 leaves: the last.ckpt written at the end of epoch 0.
    killed = make_cfg(*budget[:1], f"trainer.max_steps={per_epoch}", "test=false", subdir="k")
    train(killed)
    last = Path(killed.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = make_cfg(*budget, f"ckpt_path={last}", subdir="resumed")
    train(resumed)
    ckpt = torch.load(
        Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False
    )
    assert ckpt["global_step"] == 3 * per_epoch
