"""Model cards: written by train.py beside best.ckpt, and by scripts/model_card.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from octseg.evaluation.model_card import MODEL_CARD_NAME, _split_lines, build_model_card
from octseg.training import train
from tests.conftest import REPO_ROOT, compose_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card") / "run"
    # One scan per volume: four test volumes, so the card's intervals are over four subjects.
    train(compose_config(out, ["dataset.datamodule.scans_per_volume=1"]))
    return out


def _script():
    spec = importlib.util.spec_from_file_location("card", REPO_ROOT / "scripts" / "model_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_writes_a_card_beside_the_best_checkpoint(trained_run: Path) -> None:
    card = (trained_run / "checkpoints" / MODEL_CARD_NAME).read_text()
    report = json.loads((trained_run / "metrics.json").read_text())
    # The report says which run it is (leaderboards group by it).
    run = report["run"]
    assert (run["model"], run["dataset"], run["seed"], run["fold"]) == (
        "unet_small",
        "synthetic_small",
        42,
        None,
    )
    assert card.startswith("# Model card: unet_small on synthetic_small")
    assert "**Not for clinical use.**" in card and "## Intended use" in card
    assert "`octseg.models.unet.UNet`" in card and "seed 42" in card
    assert "3.87 µm axial x 11.3 µm lateral" in card and "mean 0.152" in card
    # The headline Dice of the report, with a bootstrap interval over its four test volumes.
    dice_row = next(line for line in card.splitlines() if line.startswith("| dice |"))
    assert f"| {report['dataset']['dice']:.3f} |" in dice_row and dice_row.endswith("| 4 |")
    assert "| mad_um/ILM |" in card and "| thickness_mae_um/RNFL |" in card


def test_script_writes_a_card_and_explains_a_missing_report(
    trained_run: Path, tmp_path: Path, capsys
) -> None:
    moved = tmp_path / "elsewhere" / "checkpoints" / "best.ckpt"
    moved.parent.mkdir(parents=True)
    shutil.copy(trained_run / "checkpoints" / "best.ckpt", moved)
    script = _script()
    assert script.main([f"ckpt_path={moved}"]) == 0
    card = (moved.parent / MODEL_CARD_NAME).read_text()
    assert "No test report next to this checkpoint" in card and "eval.py ckpt_path=" in card
    out = tmp_path / "card.md"
    report = trained_run / "metrics.json"
    assert script.main([f"ckpt_path={moved}", f"report={report}", f"out={out}"]) == 0
    assert out.read_text() == build_model_card(moved, report)
    assert "| dice |" in out.read_text()
    assert script.main(["ckpt=x"]) == 2 and "unknown argument" in capsys.readouterr().err
    assert script.main([f"ckpt_path={tmp_path / 'none.ckpt'}"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_split_lines_name_the_subjects_of_each_part() -> None:
    lines = _split_lines({"name": "duke", "split": "kfold", "fold": 2})
    assert lines[0] == "- Split: `kfold`, fold 2."
    assert "test: 2 subjects: Subject_05, Subject_06" in "\n".join(lines)
    assert "none" in _split_lines({"name": "synthetic"})[0]
