"""What ``train.py`` does: fit any LightningModule configured under ``model`` on any DataModule
under ``dataset.datamodule``, resume safely, and write the test report through the evaluation
package (the same files ``eval.py`` writes for the best checkpoint).

Module families plug in without changes here: a module whose class sets ``predicts_scans = True``
(:class:`~octseg.modules.seg_module.SegModule` and every method built on it) is tested by
predicting the test split scan by scan and computing the metric suite (``metrics`` group); any
other module is tested by its own ``test_step`` through ``trainer.test`` and reports what it logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from octseg.evaluation.checkpoint import (
    check_resume_compatible,
    load_checkpoint,
    resume_overrides,
)
from octseg.evaluation.commands import evaluate_by_test_step, evaluate_module
from octseg.evaluation.model_card import write_model_card
from octseg.evaluation.report import EvaluationResult, run_identity
from octseg.utils.callbacks import StoreRunConfig
from octseg.utils.instantiators import instantiate_callbacks, instantiate_loggers
from octseg.utils.io import atomic_write_text
from octseg.utils.run_folder import claim_run_folder

__all__ = ["SIGTERM_EXIT_CODE", "resume_argv", "train"]

log = logging.getLogger("octseg.train")

#: Exit status after SIGTERM (128 + 15), so that cluster schedulers requeue a pre-empted job.
SIGTERM_EXIT_CODE = 143


def resume_argv(argv: Sequence[str]) -> list[str]:
    """Rewrites ``train.py`` arguments for a resume: ``ckpt_path=X`` re-composes the overrides
    stored in X (the user's new ones on top) and continues in X's run folder. Other command
    lines (and multiruns) are returned unchanged.

    Raises:
        FileNotFoundError, ValueError: if the checkpoint is missing or not OCTSeg's.
    """
    args = list(argv)
    if "-m" in args or "--multirun" in args:
        return args
    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    ckpt = next((a.split("=", 1)[1] for a in overrides if a.startswith("ckpt_path=")), None)
    if not ckpt or ckpt == "null":
        return args
    flags = [a for a in args if a not in overrides]
    return flags + resume_overrides(ckpt, overrides)


def _check_budget(cfg: DictConfig) -> None:
    if not cfg.get("train"):
        return
    trainer = cfg.get("trainer") or {}
    for key in ("max_epochs", "max_steps"):
        if trainer.get(key) == 0:
            raise ValueError(
                f"trainer.{key}=0 trains nothing, and testing an untrained model reports "
                "meaningless metrics. Give a positive budget, or evaluate a checkpoint with "
                "eval.py ckpt_path=... ."
            )


def _resume_wandb_run(cfg: DictConfig, ckpt: dict[str, Any]) -> None:
    """Continues the checkpoint's W&B run (its id is stored inside)."""
    if "wandb" in (cfg.get("logger") or {}) and ckpt.get("wandb_run_id"):
        cfg.logger.wandb.id = ckpt["wandb_run_id"]
        cfg.logger.wandb.resume = "allow"


def train(cfg: DictConfig) -> dict[str, float]:
    """Fits the model, tests the best checkpoint and writes the report; returns the final
    training values (``trainer.callback_metrics``) and the test values (``test/<key>``).

    The W&B run is closed on the way out (also after a crash), so that every job of a multirun
    gets its own complete run.

    Raises:
        SystemExit: with status 143 when SIGTERM stopped training (``last.ckpt`` is written).
    """
    try:
        return _train(cfg)
    finally:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _train(cfg: DictConfig) -> dict[str, float]:
    _check_budget(cfg)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        ckpt = load_checkpoint(ckpt_path)
        check_resume_compatible(ckpt["octseg_config"], cfg, ckpt_path)
        _resume_wandb_run(cfg, ckpt)
        del ckpt
    claim_run_folder(output_dir, resuming=bool(ckpt_path))
    pl.seed_everything(cfg.seed, workers=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    config_file = output_dir / "config.yaml"
    if ckpt_path and config_file.exists():  # keep the original run's config beside the new one
        config_file = output_dir / f"config.resumed-{int(Path(ckpt_path).stat().st_mtime)}.yaml"
    atomic_write_text(config_file, OmegaConf.to_yaml(resolved))

    datamodule = _instantiate_datamodule(cfg)
    _check_module_fits_data(cfg, datamodule)
    log.info("Model <%s>", cfg.model._target_)
    model: pl.LightningModule = hydra.utils.instantiate(cfg.model)

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    callbacks = instantiate_callbacks(cfg.get("callbacks")) + [StoreRunConfig(resolved, overrides)]
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(resolved)

    fit_seconds = None
    if cfg.get("train"):
        fit_start = time.perf_counter()
        try:
            trainer.fit(
                model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False
            )  # our own checkpoints hold the run config
        except SIGTERMException as err:  # Lightning exits with status 0 otherwise
            log.warning(
                "SIGTERM: stopped training; resume with ckpt_path=%s",
                output_dir / "checkpoints" / "last.ckpt",
            )
            raise SystemExit(SIGTERM_EXIT_CODE) from err
        fit_seconds = time.perf_counter() - fit_start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if fit_seconds is not None:
        # What the run cost: leaderboards under a time budget show how far each method got.
        metrics["trainer/global_step"] = float(trainer.global_step)
        metrics["trainer/fit_time_s"] = round(fit_seconds, 1)

    if cfg.get("test"):
        result = _test(cfg, trainer, model, datamodule, metrics)
        if result is not None:
            metrics.update({f"test/{k}": v for k, v in result.dataset.items()})
    return metrics


def _instantiate_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The dataset's DataModule; with ``+dataset@unlabelled=<name>`` (the ``unlabelled`` key),
    that dataset's training part joins the training part as unlabelled B-scans
    (``unlabelled_from``, see :class:`~octseg.data.base.SegDataModule`)."""
    log.info("Dataset <%s>", cfg.dataset.datamodule._target_)
    unlabelled = cfg.get("unlabelled")
    if not unlabelled:
        return hydra.utils.instantiate(cfg.dataset.datamodule)
    if "datamodule" not in unlabelled:
        raise ValueError(
            f"unlabelled must be a dataset config with a datamodule, got keys "
            f"{sorted(unlabelled)}; choose one with +dataset@unlabelled=<name> (e.g. kermany)."
        )
    log.info("Unlabelled B-scans from <%s>", unlabelled.get("name"))
    # The source's B-scans get this dataset's augmentation and normalisation, not their own.
    source = hydra.utils.instantiate(unlabelled.datamodule, train_transform=None)
    return hydra.utils.instantiate(cfg.dataset.datamodule, unlabelled_from=source)


def _check_module_fits_data(cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """Refuses, before the model is built, a module that cannot learn from the training data
    as set, instead of a KeyError on the first batch or B-scans silently counted in no loss:

    - a module that learns from label maps on a dataset without them (image-level sets); a
      module class that can sets ``trains_without_pixel_labels = True`` (f-AnoGAN);
    - unlabelled training B-scans (``labelled_fraction`` < 1 with ``unlabelled: keep``, or
      ``+dataset@unlabelled``) for a module that does not learn from them; a semi-supervised
      module class sets ``learns_from_unlabelled_scans = True`` (SD-LayerNet).
    """
    module_class = hydra.utils.get_class(cfg.model._target_)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    model_name = choices.get("model") or cfg.model._target_
    if not getattr(datamodule, "has_pixel_labels", True) and not getattr(
        module_class, "trains_without_pixel_labels", False
    ):
        raise ValueError(
            f"dataset={cfg.dataset.name} holds image-level classes only (no label maps), but "
            f"model={model_name} ({module_class.__name__}) trains on label maps. Train it on a "
            "dataset with masks (dataset=duke, hcms, retouch, ...); on image-level sets only "
            "model=fanogan trains (on dataset.normal_class, e.g. experiment=fanogan_kermany)."
        )
    if getattr(datamodule, "has_unlabelled_training_scans", False) and not getattr(
        module_class, "learns_from_unlabelled_scans", False
    ):
        raise ValueError(
            f"The training part holds unlabelled B-scans (dataset.datamodule."
            f"labelled_fraction={getattr(datamodule, 'labelled_fraction', None)} with "
            f"unlabelled=keep, or +dataset@unlabelled), but model={model_name} "
            f"({module_class.__name__}) learns from label maps only: they would count in no "
            "loss. Use a semi-supervised method (model=sd_layernet, e.g. "
            "experiment=sd_layernet_duke_semi), or set dataset.datamodule.unlabelled=drop and "
            "leave out +dataset@unlabelled for the labelled-only baseline."
        )


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best or not Path(best).exists():
        log.warning("No best checkpoint found; testing the current weights.")
        return None
    return best


def _test(
    cfg: DictConfig,
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    training_values: dict[str, float],
) -> EvaluationResult | None:
    """Tests the best checkpoint and writes the report and the model card beside the checkpoint
    (rank 0); returns the report there."""
    best = _best_checkpoint(trainer)
    run_info = {
        **run_identity(cfg),
        "run_name": cfg.get("run_name"),
        "best_checkpoint": best,
        "training": dict(sorted(training_values.items())),
    }
    if getattr(model, "predicts_scans", False):
        if not trainer.is_global_zero:
            return None
        if best is not None:
            model.load_state_dict(load_checkpoint(best)["state_dict"])
        result = evaluate_module(
            model,
            datamodule,
            cfg.metrics,
            cfg.paths.output_dir,
            precision=cfg.trainer.get("precision"),
            run_info=run_info,
            postprocess=cfg.get("postprocess"),
        )
        # The loggers (W&B summary, CSV) get the same test values as metrics.json.
        test_values = {f"test/{k}": v for k, v in result.dataset.items()}
        for logger in trainer.loggers:
            logger.log_metrics(test_values, step=trainer.global_step)
            logger.save()
        _model_card(best, cfg)
        return result
    result = evaluate_by_test_step(
        trainer,
        model,
        datamodule,
        cfg.paths.output_dir,
        list(cfg.dataset.get("class_names") or []),
        run_info=run_info,
        ckpt_path=best,
    )
    if result is not None:
        _model_card(best, cfg)
    return result


def _model_card(best: str | None, cfg: DictConfig) -> None:
    """Writes MODEL_CARD.md beside the tested best checkpoint, from its test report."""
    if best is not None:
        write_model_card(best, report=Path(cfg.paths.output_dir) / "metrics.json")
