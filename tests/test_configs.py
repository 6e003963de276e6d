"""Every option of every config group composes, and the buildable ones instantiate."""

from __future__ import annotations

import hydra
import pytest
from omegaconf import OmegaConf

from octseg.utils.config import group_options

GROUPS = ["model", "dataset", "metrics", "loss", "optimizer", "scheduler", "augmentation",
          "trainer", "logger", "callbacks", "paths", "experiment", "hparams_search", "debug"]


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert group_options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize("option", group_options("model"))
def test_model_options_instantiate(make_cfg, option: str) -> None:
    cfg = make_cfg(f"model={option}")
    module = hydra.utils.instantiate(cfg.model)
    assert module.net is not None


@pytest.mark.parametrize("group", ["loss", "optimizer", "scheduler", "metrics", "augmentation"])
def test_component_options_instantiate(make_cfg, group: str) -> None:
    for option in group_options(group):
        cfg = make_cfg(f"{group}={option}", "trainer.max_steps=100")
        node = cfg.get(group)
        if node is None or (OmegaConf.is_dict(node) and not node):
            continue  # "none"-style options
        obj = hydra.utils.instantiate(node)
        assert obj is not None, f"{group}={option}"


@pytest.mark.parametrize("option", group_options("trainer"))
def test_trainer_options_compose(make_cfg, option: str) -> None:
    cfg = make_cfg(f"trainer={option}")
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if option in ("cpu",):
        trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
        assert trainer.max_epochs == 1


@pytest.mark.parametrize("option", group_options("logger"))
def test_logger_options_compose(make_cfg, option: str) -> None:
    cfg = make_cfg(f"logger={option}")
    names = set(cfg.logger or {})
    if option != "none":
        assert "csv" in names, "a CSV logger must always run alongside"
    if option in ("default", "wandb", "many"):
        assert cfg.logger.wandb.offline is True


def test_callbacks_default_instantiates(make_cfg) -> None:
    from octseg.utils.instantiators import instantiate_callbacks

    cfg = make_cfg("callbacks=default", fast=False)
    names = {type(c).__name__ for c in instantiate_callbacks(cfg.callbacks)}
    assert {"ModelCheckpoint", "EarlyStopping", "RichProgressBar", "LearningRateMonitor",
            "LastCheckpointOnException", "LogPredictionOverlays"} <= names


@pytest.mark.parametrize("group", ["debug", "experiment", "hparams_search", "paths", "dataset"])
def test_global_options_compose(make_cfg, group: str) -> None:
    for option in group_options(group):
        cfg = make_cfg(f"{group}={option}")
        OmegaConf.to_container(cfg.model, resolve=True)  # every interpolation resolves
        if "num_classes" in cfg.model.net:  # segmenters (not f-AnoGAN's GAN and encoder)
            assert cfg.dataset.num_classes == cfg.model.net.num_classes


def test_run_name_follows_model_dataset_seed(make_cfg) -> None:
    cfg = make_cfg("model=unet", "seed=3")
    assert cfg.run_name == f"unet-{cfg.dataset.name}-s3"
    assert list(cfg.tags) == ["unet", cfg.dataset.name]


def test_every_dataset_config_serves_as_the_unlabelled_source(make_cfg) -> None:
    """Dataset configs interpolate their own keys (``${..split}``), so one placed at
    ``unlabelled`` (``+dataset@unlabelled=<name>``) reads its own settings, not the main
    dataset's: its datamodule resolves as when it is the main dataset."""
    for option in group_options("dataset"):
        alone = make_cfg(f"dataset={option}", fast=False, subdir=f"{option}-alone")
        lent = make_cfg("dataset=duke", "dataset.split=kfold", "dataset.fold=3",
                        "dataset.spacing_um=[1.0,2.0]", "dataset.ignore_index=0",
                        f"+dataset@unlabelled={option}", fast=False, subdir=option)  # fmt: skip
        ours, theirs = (
            OmegaConf.to_container(c, resolve=True)
            for c in (lent.unlabelled.datamodule, alone.dataset.datamodule)
        )
        # The augmentation is the main dataset's (train.py gives the source none).
        ours.pop("train_transform"), theirs.pop("train_transform")
        assert ours == theirs, option
        assert lent.dataset.name == "duke" and lent.unlabelled.name == alone.dataset.name
