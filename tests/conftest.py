"""Shared fixtures: composed run configs (CPU, tiny synthetic data, tmp output folders)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from octseg.utils.config import ROOT_ENV, compose, config_dir, repo_root

# The checkout under test, unless OCTSEG_ROOT names another one.
os.environ.setdefault(ROOT_ENV, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
REPO_ROOT = repo_root()
CONF_DIR = config_dir()
SHARED_DIR = REPO_ROOT.parent / "shared"
DUKE_EXPORT = SHARED_DIR / "datasets" / "duke_dme"

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
    output_dir: Path,
    overrides: list[str] | None = None,
    config_name: str = "train",
    fast: bool = True,
) -> DictConfig:
    """Composes ``conf/<config_name>.yaml`` as Hydra would, with outputs (logs included) under
    ``output_dir`` and, for ``train`` with ``fast``, the :data:`FAST_OVERRIDES` first."""
    fast_overrides = FAST_OVERRIDES if fast and config_name == "train" else []
    cfg = compose(config_name, fast_overrides + list(overrides or []), output_dir=output_dir)
    with open_dict(cfg):
        cfg.paths.log_dir = str(output_dir / "logs")
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("model=unet", ...)`` -> a composed config writing to ``tmp_path``."""

    def _make(
        *overrides: str, config_name: str = "train", fast: bool = True, subdir: str = "run"
    ) -> DictConfig:
        return compose_config(tmp_path / subdir, list(overrides), config_name, fast)

    yield _make
    GlobalHydra.instance().clear()


def requires_duke() -> pytest.MarkDecorator:
    """Skips a test when the shared Duke DME export is absent."""
    return pytest.mark.skipif(
        not (DUKE_EXPORT / "images").is_dir(), reason=f"Duke DME export not found at {DUKE_EXPORT}"
    )
