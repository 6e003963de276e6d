"""Shared fixtures: composed run configs (CPU, tiny synthetic data, tmp output folders)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from octseg.utils.resolvers import register_resolvers

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
SHARED_DIR = REPO_ROOT.parent / "shared"
DUKE_EXPORT = SHARED_DIR / "datasets" / "duke_dme"

os.environ.setdefault("OCTSEG_ROOT", str(REPO_ROOT))
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
register_resolvers()

# Fast settings for runs inside tests.
FAST_OVERRIDES = [
    "dataset=synthetic_small",
    "augmentation=light",
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "~callbacks.rich_progress_bar",
    "~callbacks.model_summary",
]


def compose_config(
    output_dir: Path, overrides: list[str] | None = None, config_name: str = "train", fast: bool = True
) -> DictConfig:
    """Composes ``conf/<config_name>.yaml`` as Hydra would, with outputs under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=(FAST_OVERRIDES if fast and config_name == "train" else []) + list(overrides or []),
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
    output_dir.mkdir(parents=True, exist_ok=True)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("model=unet", ...)`` -> a composed config writing to ``tmp_path``."""

    def _make(*overrides: str, config_name: str = "train", fast: bool = True, subdir: str = "run") -> DictConfig:
        return compose_config(tmp_path / subdir, list(overrides), config_name, fast)

    yield _make
    GlobalHydra.instance().clear()


def requires_duke() -> pytest.MarkDecorator:
    """Skips a test when the shared Duke DME export is absent."""
    return pytest.mark.skipif(
        not (DUKE_EXPORT / "images").is_dir(), reason=f"Duke DME export not found at {DUKE_EXPORT}"
    )
