"""Experiment tracking (offline W&B) and distributed training (DDP over gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from octseg.training import train
from octseg.utils.wandb_offline import read_offline_run
from tests.conftest import FAST_OVERRIDES, REPO_ROOT


def test_offline_wandb_run_holds_final_test_metrics(make_cfg) -> None:
    cfg = make_cfg("logger=wandb", "callbacks.log_overlays.every_n_epochs=1")
    metrics = train(cfg)
    run_dirs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1, "one offline W&B run per job"
    run = read_offline_run(run_dirs[0])  # the binary run-*.wandb log, read back
    summary = run["summary"]
    assert summary["test/dice"] == pytest.approx(metrics["test/dice"])
    assert "test/dice/RNFL" in summary and "test/mad_um/ILM" in summary
    assert any(k.startswith("val/overlays") for k in run["history_keys"])
    assert run["config"]["dataset"]["name"] == cfg.dataset.name
    assert run["config"]["seed"] == cfg.seed
    # The CSV logger ran alongside.
    assert (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").is_file()


def _run_cli(
    args: list[str], cwd: Path, timeout: int = 600, **env_vars: str
) -> subprocess.CompletedProcess:
    env = dict(os.environ, OCTSEG_LOG_DIR=str(cwd / "logs"), WANDB_MODE="offline",
               PYTHONWARNINGS="ignore", **env_vars)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _metrics_of(run_root: Path) -> dict[str, float]:
    files = list(run_root.rglob("metrics.json"))
    assert len(files) == 1, files
    return {f"test/{k}": v for k, v in json.loads(files[0].read_text())["dataset"].items()}


@pytest.mark.slow
def test_ddp_cpu_two_processes_match_one_process(tmp_path: Path) -> None:
    """Test metrics of a 2-process run equal those of a 1-process run of the same weights
    (to float32 summation order: AUC/AP accumulate float32 sums per rank). Both runs use one
    thread per process, as Lightning's DDP does, so the network's outputs are bitwise equal.

    Training differs between the two (the gradient is averaged over two half-batches), so both
    runs evaluate with train=false on the same freshly-seeded network: any difference comes
    from metric synchronisation alone."""
    common = FAST_OVERRIDES + ["train=false", "test=true", "seed=3",
                               "dataset.datamodule.num_test=6",
                               "dataset.datamodule.eval_batch_size=1"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _run_cli(common + ["trainer=cpu"], tmp_path / "one", OMP_NUM_THREADS="1")
    _run_cli(common + ["trainer=ddp_cpu"], tmp_path / "two", OMP_NUM_THREADS="1")
    one, two = _metrics_of(tmp_path / "one"), _metrics_of(tmp_path / "two")
    keys = [k for k in one if k.startswith("test/") and k != "test/loss"]
    assert keys
    for k in keys:
        assert two[k] == pytest.approx(one[k], rel=1e-5, abs=1e-9, nan_ok=True), k
