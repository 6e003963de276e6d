"""BioNet's two-stage module: the switch at the configured epoch, the frozen biomarker network
(no gradient, not optimised, unchanged, eval mode), resume in stage B, and a full train.py run."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch

from octseg.modules.two_stage import BioNetModule
from octseg.training import train

TINY = ["model=bionet", "loss=bionet", "model.net.base_channels=4", "model.stage_a_epochs=2"]


class _Recorder(pl.Callback):
    """Per optimizer step: epoch, stage, which biomarker parameters have a gradient or sit in
    the optimizer, whether the biomarker network is in training mode."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        bio = {id(p) for p in module.biomarker.parameters()}
        seg = {id(p) for p in module.net.parameters()}
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        self.rows.append(
            {
                "epoch": trainer.current_epoch,
                "stage": module.stage,
                "bio_grad": any(p.grad is not None for p in module.biomarker.parameters()),
                "seg_grad": any(p.grad is not None for p in module.net.parameters()),
                "bio_in_opt": bool(bio & held),
                "seg_in_opt": bool(seg & held),
                "bio_training": module.biomarker.training,
                "bio_requires_grad": any(p.requires_grad for p in module.biomarker.parameters()),
            }
        )


def _fit(make_cfg, tmp_path: Path, max_epochs: int, ckpt: str | None = None, subdir: str = "a"):
    cfg = make_cfg(*TINY, subdir=subdir)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.dataset.datamodule)
    recorder = _Recorder()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder, checkpoint],
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
    return module, trainer, recorder.rows


def _bio_state(module: BioNetModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.biomarker.state_dict().items()}


def test_stage_switch_freezes_the_biomarker_network_and_resume_stays_in_stage_b(
    make_cfg, tmp_path: Path
) -> None:
    module, trainer, rows = _fit(make_cfg, tmp_path, max_epochs=3)
    assert [(r["epoch"], r["stage"]) for r in rows] == [(0, "A"), (1, "A"), (2, "B")]
    stage_a, stage_b = rows[:2], rows[2:]
    # Stage A: only the biomarker network trains.
    assert all(r["bio_grad"] and r["bio_in_opt"] and r["bio_training"] for r in stage_a)
    assert not any(r["seg_grad"] or r["seg_in_opt"] for r in stage_a)
    # Stage B: the segmenter trains; the biomarker network is frozen, out of the optimizer,
    # without gradient and in eval mode.
    assert all(r["seg_grad"] and r["seg_in_opt"] for r in stage_b)
    assert not any(
        r["bio_grad"] or r["bio_in_opt"] or r["bio_training"] or r["bio_requires_grad"]
        for r in stage_b
    )
    assert module.stage == "B" and bool(module.in_stage_b)

    # Resume from the stage-B checkpoint: still stage B, same frozen weights, which never change.
    last = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    assert bool(saved["state_dict"]["in_stage_b"])
    frozen = {
        k[len("prior.") :]: v for k, v in saved["state_dict"].items() if k.startswith("prior.")
    }
    resumed, trainer2, rows2 = _fit(make_cfg, tmp_path, 5, str(last), subdir="b")
    assert [(r["epoch"], r["stage"]) for r in rows2] == [(3, "B"), (4, "B")]
    assert not any(r["bio_grad"] or r["bio_in_opt"] or r["bio_training"] for r in rows2)
    # The optimizer state was restored into the stage-B optimizer (Adam steps continue).
    step = next(iter(trainer2.optimizers[0].state.values()))["step"]
    assert int(step) == 3  # 1 step in the first run's stage B + 2 after the resume
    after = _bio_state(resumed)
    assert frozen.keys() == after.keys()
    for key, value in frozen.items():
        assert torch.equal(value, after[key]), key  # BatchNorm statistics included


def test_regulariser_reaches_the_segmenter_only(make_cfg) -> None:
    module = hydra.utils.instantiate(make_cfg(*TINY).model)
    module.in_stage_b.fill_(True)
    module.configure_optimizers()  # applies stage B: frozen prior
    module.train()
    assert not module.biomarker.training
    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 1, 40, 48), "mask": torch.randint(0, 10, (2, 40, 48))}
    output, losses = module.model_step(batch)
    assert output.aux["thickness_pred"].shape == (2, 48)
    assert set(losses) == {"loss", "lcs", "gms", "biomarker"}
    losses["biomarker"].backward()
    assert all(p.grad is None for p in module.biomarker.parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.net.lcs.parameters()
    )


def test_bad_settings_raise(make_cfg) -> None:
    with pytest.raises(Exception, match="model.stage_a_epochs=0"):
        hydra.utils.instantiate(make_cfg(*TINY, "model.stage_a_epochs=0").model)
    with pytest.raises(Exception, match="thickness_unit='um'"):
        hydra.utils.instantiate(make_cfg(*TINY, "model.thickness_unit=um", subdir="b").model)


def test_early_stopping_within_stage_a_is_refused(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY)
    module = hydra.utils.instantiate(cfg.model)
    stop = pl.callbacks.EarlyStopping(monitor="val/dice", mode="max", patience=2)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        callbacks=[stop],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(ValueError, match="callbacks.early_stopping.patience"):
        trainer.fit(module, datamodule=hydra.utils.instantiate(cfg.dataset.datamodule))


def test_train_py_runs_both_stages_and_tests_through_the_evaluation_package(make_cfg) -> None:
    cfg = make_cfg(
        *TINY,
        "model.stage_a_epochs=1",
        "trainer.max_epochs=2",
        "metrics=fast",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
    )
    metrics = train(cfg)
    assert metrics["train/stage_b"] == 1.0
    assert math.isfinite(metrics["test/dice"])
    assert (Path(cfg.paths.output_dir) / "metrics.json").is_file()
