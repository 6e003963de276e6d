"""Building Lightning callbacks and loggers from their config groups."""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

__all__ = ["instantiate_callbacks", "instantiate_loggers"]

log = logging.getLogger(__name__)


def _instantiate_group(cfg: DictConfig | None, group: str) -> list:
    objects = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(
            f"Config group `{group}` must be a mapping of name -> config, got {cfg!r}."
        )
    for node in cfg.values():
        if isinstance(node, DictConfig) and "_target_" in node:
            log.info("Instantiating %s <%s>", group, node._target_)
            objects.append(hydra.utils.instantiate(node))
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    """Instantiates every entry of the ``callbacks`` group that has a ``_target_``."""
    return _instantiate_group(cfg, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Instantiates every entry of the ``logger`` group that has a ``_target_``."""
    return _instantiate_group(cfg, "logger")
