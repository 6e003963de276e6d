"""Shared by the tests of datasets prepared from their releases: a split file for a fixture, a
one-batch run of ``octseg.training.train`` on a prepared folder, and running a
``scripts/prepare_<name>.py``."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

from octseg.training import train
from tests.conftest import REPO_ROOT, compose_config

__all__ = ["fast_dev_run", "run_prepare_script", "write_split"]


def write_split(path: Path, train_ids: Sequence[str], val: Sequence[str], test: Sequence[str],
                unit: str = "subject") -> Path:  # fmt: skip
    """A one-fold split file for a fixture."""
    fold = {"train": list(train_ids), "val": list(val), "test": list(test)}
    spec = {"unit": unit, "protocol": "fixture", "folds": [fold]}
    path.write_text(json.dumps(spec))
    return path


def fast_dev_run(
    out: Path,
    dataset: str,
    data_root: Path,
    split: Path,
    metrics: str | None = "layers",
    *extra: str,
    augmentation: str = "none",
) -> dict[str, float]:
    """``train(cfg)`` with ``dataset=<dataset>``, ``debug=fdr``, U-Net small, on ``data_root``
    (which holds ``<dataset>/``), the split file ``split``, the test suite ``metrics`` (None:
    the config's) and ``extra`` overrides; returns its metrics."""
    cfg = compose_config(
        out,
        [f"dataset={dataset}", f"paths.data_dir={data_root}", "debug=fdr", "model=unet_small",
         "logger=csv", f"augmentation={augmentation}", f"dataset.split={split}",
         *([f"metrics={metrics}"] if metrics else []),
         "~callbacks.rich_progress_bar", "~callbacks.model_summary", *extra],
        fast=False,
    )  # fmt: skip
    try:
        return train(cfg)
    finally:
        GlobalHydra.instance().clear()


def run_prepare_script(name: str, argv: Sequence[str]) -> int:
    """Runs ``scripts/prepare_<name>.py`` in process (its ``prepare_main``) with ``argv``."""
    path = REPO_ROOT / "scripts" / f"prepare_{name}.py"
    spec = importlib.util.spec_from_file_location(f"prepare_{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from octseg.data.prepared import prepare_main

    prepare = getattr(module, f"prepare_{name}")
    return prepare_main(module.__doc__, prepare, getattr(module, "add_options", None), list(argv))
