"""Hydra launchers (conf/hydra/launcher): SLURM composed (no cluster here), local parallel run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from octseg.utils.config import compose
from tests.conftest import FAST_OVERRIDES
from tests.test_wandb_ddp import _run_cli


def test_slurm_launcher_composes_with_cluster_settings(tmp_path: Path) -> None:
    cfg = compose(
        "train",
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2",
         "hydra.launcher.tasks_per_node=4", "hydra.launcher.gpus_per_node=4",
         "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
        output_dir=tmp_path,
    )  # fmt: skip
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.nodes, launcher.gpus_per_node) == ("gpu", 2, 4)
    assert launcher.tasks_per_node == cfg.trainer.devices == 4
    assert cfg.trainer.num_nodes == 2
    # The launcher's target and its options exist in the installed plugin.
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    assert set(launcher) - {"_target_"} <= set(SlurmQueueConf.__dataclass_fields__)


def test_local_parallel_launcher_composes(tmp_path: Path) -> None:
    cfg = compose("train", ["hydra/launcher=local_parallel"], output_dir=tmp_path)
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2


@pytest.mark.slow
def test_local_parallel_launcher_runs_a_multirun(tmp_path: Path) -> None:
    _run_cli(
        ["-m", "hydra/launcher=local_parallel", "model=unet_small", "seed=1,2", *FAST_OVERRIDES],
        tmp_path,
        OMP_NUM_THREADS="1",
    )
    metrics = sorted((tmp_path / "logs").rglob("metrics.json"))
    seeds = {json.loads(m.read_text())["run"]["run_name"].rsplit("-s", 1)[1] for m in metrics}
    assert seeds == {"1", "2"}
