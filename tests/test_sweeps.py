"""Multirun and Optuna sweeps through the train.py CLI (slow: several training jobs each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST_OVERRIDES
from tests.test_wandb_ddp import _run_cli


@pytest.mark.slow
def test_multirun_runs_one_job_per_seed(tmp_path: Path) -> None:
    _run_cli(["-m", "model=unet_small", "seed=1,2", *FAST_OVERRIDES], tmp_path)
    metrics = sorted((tmp_path / "logs").rglob("metrics.json"))
    assert len(metrics) == 2
    seeds = {json.loads(m.read_text())["run"]["run_name"].rsplit("-s", 1)[1] for m in metrics}
    assert seeds == {"1", "2"}


@pytest.mark.slow
def test_optuna_sweep_reports_best_trial(tmp_path: Path) -> None:
    proc = _run_cli(["hparams_search=unet_optuna", "hydra.sweeper.n_trials=2",
                     "trainer.max_epochs=1", "~callbacks.rich_progress_bar"], tmp_path)
    results = list((tmp_path / "logs").rglob("optimization_results.yaml"))
    assert len(results) == 1, proc.stdout[-2000:]
    best = yaml.safe_load(results[0].read_text())
    assert 0.0 <= best["best_value"] <= 1.0
    assert {"optimizer.lr", "model.net.base_channels"} <= set(best["best_params"])
