"""Multirun and Optuna sweeps through the train.py CLI (slow: several training jobs each), and
the jobs of the cross-validation options (composed, not run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from octseg.data.splits import load_split
from octseg.utils.config import compose
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


def _sweep_jobs(overrides: list[str], tmp_path: Path) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for ``train.py -m <overrides>``: the config's
    ``hydra.sweeper.params`` first, the command line on top (as ``BasicSweeper.sweep`` does)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    plain = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    cfg = compose("train", plain, output_dir=tmp_path / "compose")
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    parsed = parser.parse_overrides(params + overrides)
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return batch


@pytest.mark.parametrize(
    ("option", "split", "n_folds"), [("kfold", "kfold", 5), ("ynet_kfold", "ynet_kfold", 4)]
)
def test_cv_multirun_composes_one_job_per_fold(
    option: str, split: str, n_folds: int, tmp_path: Path
) -> None:
    args = [f"+cv={option}", "experiment=duke_cpu", "seed=7"]
    jobs = _sweep_jobs(args, tmp_path)
    assert len(jobs) == n_folds
    tests = []
    for i, job in enumerate(jobs):
        cfg = compose("train", job, output_dir=tmp_path / str(i))
        # The cv option overrides the experiment's split; the method is kept.
        assert (cfg.dataset.split, cfg.dataset.fold) == (split, i)
        assert cfg.experiment_name == "duke_cpu" and cfg.seed == 7
        info = load_split(cfg.dataset.split, cfg.dataset.fold, dataset="duke")
        tests.append(frozenset(info["test"]))
        if option == "ynet_kfold":  # the ensemble's test subjects: unseen by every fold
            assert info["test"] == ["Subject_09", "Subject_10"]
            assert not {"Subject_09", "Subject_10"} & set(info["train"] + info["val"])
    assert len(set(tests)) == (n_folds if option == "kfold" else 1)
    # More seeds multiply the jobs; a fold list on the command line replaces the config's.
    assert len(_sweep_jobs([*args, "seed=1,2"], tmp_path)) == 2 * n_folds
    assert len(_sweep_jobs([*args, "dataset.fold=0,1"], tmp_path)) == 2
