"""Train, validate and test a segmentation model:  python train.py model=ynet dataset=duke

Everything is composed from conf/ by Hydra; see README.md for the config groups.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("OCTSEG_ROOT", str(Path(__file__).resolve().parent))

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from octseg.utils.callbacks import StoreRunConfig
from octseg.utils.instantiators import instantiate_callbacks, instantiate_loggers
from octseg.utils.io import atomic_write_text
from octseg.utils.resolvers import register_resolvers
from octseg.utils.run import check_model_dataset, print_metrics_table, save_metrics

log = logging.getLogger("octseg.train")
register_resolvers()


def resume_wandb_run(cfg: DictConfig) -> None:
    """On resume, continue the same W&B run as the checkpoint (its id is stored inside)."""
    if not cfg.get("ckpt_path") or "wandb" not in (cfg.get("logger") or {}):
        return
    ckpt = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=False)
    if ckpt.get("wandb_run_id"):
        cfg.logger.wandb.id = ckpt["wandb_run_id"]
        cfg.logger.wandb.resume = "allow"


def train(cfg: DictConfig) -> dict[str, float]:
    """Fits the model, tests the best checkpoint and writes ``metrics.json``; returns metrics.

    The W&B run is closed on the way out (also after a crash), so that every job of a multirun
    gets its own complete run."""
    try:
        return _train(cfg)
    finally:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _train(cfg: DictConfig) -> dict[str, float]:
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(resolved))

    log.info("Dataset <%s>", cfg.dataset.datamodule._target_)
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.dataset.datamodule)
    log.info("Model <%s> with net <%s>", cfg.model._target_, cfg.model.net._target_)
    model: pl.LightningModule = hydra.utils.instantiate(cfg.model)
    check_model_dataset(model.net, cfg.dataset.in_channels, cfg.dataset.num_classes,
                        model_name=f"model.net <{cfg.model.net._target_}>")

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    callbacks = instantiate_callbacks(cfg.get("callbacks")) + [StoreRunConfig(resolved, overrides)]
    resume_wandb_run(cfg)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(resolved)

    if cfg.get("train"):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"),
                    weights_only=False)  # our own checkpoints hold the run config
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best or not Path(best).exists():
            log.warning("No best checkpoint found; testing the current weights.")
            best = None
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best, weights_only=False,
                     verbose=False)
        metrics.update(model.test_results)
        if trainer.is_global_zero:
            surfaces = (cfg.dataset.get("anatomy") or {}).get("surface_names") or []
            print_metrics_table(metrics, list(cfg.dataset.class_names), "test", list(surfaces))
        facts = {"best_checkpoint": best, "run_name": cfg.run_name}
        if trainer.is_global_zero:
            save_metrics(output_dir / "metrics.json", metrics, facts)
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric") or "")
    if HydraConfig.get().mode.name == "MULTIRUN":
        log.info("%s = %s", cfg.optimized_metric, value)
    return value


if __name__ == "__main__":
    main()
