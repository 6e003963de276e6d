"""Builds the ``net`` node of any ``conf/model/*.yaml`` without composing the whole run config."""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf
from torch import nn

from octseg.utils.config import config_dir, group_options

MODEL_CONF_DIR = config_dir() / "model"

# Dataset metadata the model configs interpolate (the synthetic dataset's shape: 1 channel,
# 10 classes; Duke's spacing).
DATASET_STUB = {
    "name": "stub",
    "in_channels": 1,
    "num_classes": 10,
    "ignore_index": 255,
    "spacing_um": [3.87, 11.3],
}


def model_config_names() -> list[str]:
    """Every model config in ``conf/model``."""
    return group_options("model")


def build_net(name: str, **overrides: object) -> nn.Module:
    """Instantiates ``conf/model/<name>.yaml``'s ``net`` (following a ``defaults`` parent)."""
    node = OmegaConf.load(MODEL_CONF_DIR / f"{name}.yaml")
    parents = node.pop("defaults", [])
    for parent in parents:
        # `_self_`, the shared SegModule wiring (`/model/module/...`) and objectives bound by
        # the model (`{/loss@objective: ...}` entries) carry no `net`.
        if not isinstance(parent, str) or parent == "_self_" or parent.startswith("/"):
            continue
        base = OmegaConf.load(MODEL_CONF_DIR / f"{parent}.yaml")
        node = OmegaConf.merge(base, node)
    cfg = OmegaConf.create({"dataset": DATASET_STUB, "net": node.net})
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"net.{key}", value)
    OmegaConf.resolve(cfg)
    return hydra.utils.instantiate(cfg.net)
