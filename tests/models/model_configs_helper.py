"""Builds the ``net`` node of any ``conf/model/*.yaml`` without composing the whole run config."""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf
from torch import nn

from octseg.profiling import model_config_names, model_config_node

__all__ = ["DATASET_STUB", "build_net", "model_config_names"]

# Dataset metadata the model configs interpolate (the synthetic dataset's shape: 1 channel,
# 10 classes; Duke's spacing).
DATASET_STUB = {
    "name": "stub",
    "in_channels": 1,
    "num_classes": 10,
    "ignore_index": 255,
    "spacing_um": [3.87, 11.3],
}


def build_net(name: str, **overrides: object) -> nn.Module:
    """Instantiates ``conf/model/<name>.yaml``'s ``net`` (following a ``defaults`` parent)."""
    node = model_config_node(name)
    cfg = OmegaConf.create({"dataset": DATASET_STUB, "net": node.net})
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"net.{key}", value)
    OmegaConf.resolve(cfg)
    return hydra.utils.instantiate(cfg.net)
