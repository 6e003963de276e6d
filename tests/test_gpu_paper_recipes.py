"""scripts/gpu_paper_recipes.sh rehearsed on the CPU with a shortened schedule (real Duke)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DIR, requires_duke


@pytest.mark.slow
@pytest.mark.realdata
@requires_duke()
def test_paper_recipe_script_trains_evaluates_and_ranks(tmp_path: Path) -> None:
    import sys

    out = tmp_path / "out"
    env = dict(
        os.environ, SHORT="1", TRAINER="cpu", SEEDS="1", OUT=str(out), PYTHON=sys.executable,
        DATA_DIR=str(SHARED_DIR / "datasets"), OCTSEG_LOG_DIR=str(tmp_path / "logs"),
        WANDB_MODE="offline", PYTHONWARNINGS="ignore",
    )  # fmt: skip
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gpu_paper_recipes.sh")],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    times = (out / "times.tsv").read_text().splitlines()
    recipes = [line.split("\t")[0] for line in times[1:]]
    assert recipes == ["unet_duke", "relaynet_duke", "ynet_duke"]
    board = json.loads((out / "leaderboard" / "leaderboard.json").read_text())
    assert len(board["methods"]) == 3, board.keys()
    assert (out / "gpu.txt").read_text().strip()


def test_paper_recipe_script_names_a_missing_data_dir(tmp_path: Path) -> None:
    env = dict(os.environ, DATA_DIR=str(tmp_path / "nowhere"), OUT=str(tmp_path / "out"))
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gpu_paper_recipes.sh")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "DATA_DIR" in proc.stderr
