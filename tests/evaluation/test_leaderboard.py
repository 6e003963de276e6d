"""Leaderboard over hand-made reports: grouping, exact statistics, outputs and errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from octseg.evaluation.leaderboard import (
    build_leaderboard,
    find_reports,
    higher_is_better,
    load_runs,
    method_label,
)
from octseg.evaluation.report import EvaluationResult
from octseg.evaluation.statistics import bootstrap_ci
from tests.conftest import REPO_ROOT

VOLUMES = [f"Subject_{i:02d}" for i in range(1, 8)]
CLASSES = ["background", "RNFL", "fluid"]
# Per-volume Dice of RNFL and MAD of the ILM: method A better than B on every subject.
DICE = {"A": np.linspace(0.80, 0.92, 7), "B": np.linspace(0.70, 0.86, 7)}
MAD = {"A": np.linspace(3.0, 6.0, 7), "B": np.linspace(4.0, 9.0, 7)}


def _write_run(
    folder: Path,
    method: str,
    seed: int,
    dataset: str = "toy",
    classes: list[str] = CLASSES,
    shift: float = 0.0,
    training: dict[str, float] | None = None,
) -> None:
    volumes = {
        v: {"dice/RNFL": float(DICE[method][i] + shift), "mad_um/ILM": float(MAD[method][i])}
        for i, v in enumerate(VOLUMES)
    }
    dataset_values = {
        "dice/RNFL": float(np.mean(DICE[method]) + shift),
        "mad_um/ILM": float(np.mean(MAD[method])),
        "dice/fluid": math.nan,
        "pooled/dice/RNFL": 0.5,
    }
    EvaluationResult(
        dataset=dataset_values,
        volumes=volumes,
        settings={"class_names": classes},
        run={
            "model": method,
            "experiment": "default",
            "dataset": dataset,
            "seed": seed,
            "split": "ynet",
            "fold": None,
            "run_name": f"{method}-{dataset}-s{seed}",
            "training": training or {},
        },
    ).write(folder)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun-like tree: two methods x two seeds (seed 2 is 0.02 Dice better)."""
    root = tmp_path / "multirun"
    for j, (method, seed) in enumerate([(m, s) for m in ("A", "B") for s in (1, 2)]):
        _write_run(root / str(j), method, seed, shift=0.02 * (seed - 1))
    return root


def test_grouping_mean_sd_ci_and_paired_test_are_exact(sweep: Path) -> None:
    runs = load_runs([sweep])
    assert len(runs) == 4 and {r.method for r in runs} == {"A", "B"}
    board = build_leaderboard(runs, ["dice/*", "mad_um/*"], n_resamples=2000, seed=7)
    assert board.methods == ["A", "B"]  # ranked by the first metric
    assert board.metrics == ["dice/RNFL", "dice/fluid", "mad_um/ILM"]
    a, b = board.row("A", "dice/RNFL"), board.row("B", "dice/RNFL")
    assert a.n_runs == 2
    assert a.mean == pytest.approx(DICE["A"].mean() + 0.01)
    assert a.sd == pytest.approx(np.std([DICE["A"].mean(), DICE["A"].mean() + 0.02], ddof=1))
    # Per subject: the mean over the two seeds; the CI is the bootstrap of those values.
    subject = DICE["A"] + 0.01
    assert list(board.subjects["A"]["dice/RNFL"].values()) == pytest.approx(subject)
    assert (a.ci_low, a.ci_high) == pytest.approx(bootstrap_ci(subject, 0.95, 2000, 7))
    assert a.n_subjects == 7 and a.is_best and not b.is_best
    expected = stats.wilcoxon(DICE["B"] + 0.01, subject)
    assert b.p_value == pytest.approx(expected.pvalue) and b.n_pairs == 7
    assert not b.underpowered
    # Lower is better for distances: A (smaller MAD) is best there too.
    assert board.row("A", "mad_um/ILM").is_best
    # A metric undefined everywhere gives empty cells, not an error.
    assert math.isnan(board.row("A", "dice/fluid").mean)
    assert "p=" in board.to_markdown() and "**" in board.to_markdown()


def test_outputs_are_written(sweep: Path, tmp_path: Path) -> None:
    board = build_leaderboard(load_runs([sweep]), n_resamples=500)
    paths = board.write(tmp_path / "out")
    assert {"markdown", "csv", "json", "boxplot_dice", "boxplot_mad_um"} <= set(paths)
    md = paths["markdown"].read_text()
    assert "# Leaderboard: toy" in md and "Dice per class" in md and "(µm)" in md
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["metric"]) for r in rows} >= {("A", "dice/RNFL"), ("B", "mad_um/ILM")}
    data = json.loads(paths["json"].read_text())
    assert data["format"] == "octseg-leaderboard" and len(data["runs"]) == 4
    assert data["subjects"]["B"]["mad_um/ILM"]["Subject_03"] == pytest.approx(MAD["B"][2])
    assert paths["boxplot_dice"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_table_shows_what_training_cost(tmp_path: Path) -> None:
    # A time-budgeted board: how many steps each method reached, and in how long.
    for seed, steps in ((1, 100), (2, 200)):
        cost = {"trainer/global_step": float(steps), "trainer/fit_time_s": 120.0 * seed}
        _write_run(tmp_path / f"A{seed}", "A", seed, training=cost)
        _write_run(tmp_path / f"B{seed}", "B", seed)  # e.g. an eval.py report: no training
    markdown = build_leaderboard(load_runs([tmp_path]), n_resamples=200).to_markdown()
    assert "| A | 2 | 1, 2 | - | ynet | 7 | 150 | 3.0 |" in markdown
    assert "| B | 2 | 1, 2 | - | ynet | 7 | - | - |" in markdown


def test_few_subjects_are_flagged(tmp_path: Path) -> None:
    for j, method in enumerate(("A", "B")):
        _write_run(tmp_path / str(j), method, 1)
        report = tmp_path / str(j) / "metrics.json"
        data = json.loads(report.read_text())
        data["volumes"] = {v: data["volumes"][v] for v in VOLUMES[:4]}
        report.write_text(json.dumps(data))
    board = build_leaderboard(load_runs([tmp_path]), ["dice/RNFL"], n_resamples=200)
    row = board.row("B", "dice/RNFL")
    assert row.n_pairs == 4 and row.underpowered and math.isnan(row.sd)
    assert "†" in board.to_markdown()


def test_errors_name_the_problem(sweep: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no metrics.json"):
        find_reports([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        find_reports([tmp_path / "missing"])
    _write_run(tmp_path / "other", "A", 1, dataset="duke")
    with pytest.raises(ValueError, match="mix 2 datasets"):
        build_leaderboard(load_runs([sweep, tmp_path / "other"]))
    only = load_runs([sweep, tmp_path / "other"], dataset="duke")
    assert [r.dataset for r in only] == ["duke"]
    with pytest.raises(ValueError, match="none of the 5 reports"):
        load_runs([sweep, tmp_path / "other"], dataset="retouch")
    _write_run(tmp_path / "labels", "A", 3, classes=["bg", "x", "y"])
    with pytest.raises(ValueError, match="class names"):
        build_leaderboard(load_runs([sweep, tmp_path / "labels"]))
    with pytest.raises(ValueError, match="match no key"):
        build_leaderboard(load_runs([sweep]), ["hd95_um"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="not an OCTSeg metrics report"):
        load_runs([tmp_path / "bad"])


def test_the_same_run_found_twice_is_warned_about(sweep: Path, tmp_path: Path, caplog) -> None:
    _write_run(tmp_path / "again", "A", 1)
    load_runs([sweep / "0", tmp_path / "again"])
    assert "2 reports have the same method" in caplog.text
    caplog.clear()
    load_runs([sweep])
    assert "same method" not in caplog.text


def test_method_labels_and_metric_direction(tmp_path: Path) -> None:
    path = tmp_path / "r" / "metrics.json"
    assert method_label({"experiment": "duke_cpu", "model": "unet_small"}, path) == "duke_cpu"
    assert method_label({"method": "ens4", "experiment": "duke_cpu"}, path) == "ens4"
    assert method_label({"experiment": "default", "model": "ynet"}, path) == "ynet"
    assert method_label({"run_name": "unet-duke-s3"}, path) == "unet-duke"
    assert method_label({}, path) == "r"
    # Another dataset's unlabelled B-scans make another method, named once.
    semi = {"experiment": "sd_layernet_duke_semi", "unlabelled": "kermany"}
    assert method_label(semi, path) == "sd_layernet_duke_semi+kermany"
    own = {"experiment": "sd_layernet_duke_kermany", "unlabelled": "kermany"}
    assert method_label(own, path) == "sd_layernet_duke_kermany"
    assert higher_is_better("dice/RNFL") and higher_is_better("auroc")
    assert not higher_is_better("mad_um/ILM") and not higher_is_better("thickness_mae_um")
    assert not higher_is_better("topology_violation_rate")


def test_script_writes_outputs_and_reports_errors(sweep: Path, tmp_path: Path, capsys) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("lb", REPO_ROOT / "scripts" / "leaderboard.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "board"
    assert script.main([str(sweep), "--out", str(out), "--resamples", "200", "--no-plots"]) == 0
    assert (out / "leaderboard.md").is_file() and not list(out.glob("*.png"))
    assert "Leaderboard: toy" in capsys.readouterr().out
    assert script.main([str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_leaderboard_of_a_real_multirun(tmp_path: Path) -> None:
    """Two methods x two seeds trained on synthetic_small as one multirun, then the leaderboard
    over the sweep folder (the test data fixed across seeds, four one-scan test volumes)."""
    from tests.conftest import FAST_OVERRIDES
    from tests.test_wandb_ddp import _run_cli

    proc = _run_cli(
        [
            "-m",
            "model=unet_small,relaynet",
            "seed=1,2",
            *FAST_OVERRIDES,
            "dataset.datamodule.seed=0",
            "dataset.datamodule.scans_per_volume=1",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    board = build_leaderboard(load_runs([sweep]), n_resamples=1000)
    assert sorted(board.methods) == ["relaynet", "unet_small"]
    for method in board.methods:
        row = board.row(method, "dice")
        assert row.n_runs == 2 and row.n_subjects == 4 and row.ci_low <= row.ci_high
        seeds = {r.identity["seed"] for r in board.runs if r.method == method}
        assert seeds == {1, 2}
    other = board.row(board.methods[1], "dice")
    assert other.n_pairs == 4 and other.underpowered
    paths = board.write(tmp_path / "board")
    assert "| unet_small |" in paths["markdown"].read_text()
    for run in board.runs:  # train.py records what training cost
        assert run.training["trainer/global_step"] > 0 and run.training["trainer/fit_time_s"] > 0


def test_wandb_table_logs_every_row_without_network(
    sweep: Path, tmp_path: Path, monkeypatch
) -> None:
    import wandb

    from octseg.evaluation.leaderboard import LEADERBOARD_COLUMNS, log_to_wandb

    # Offline into tmp_path. (Not WANDB_MODE=disabled: W&B keeps the settings of its first
    # setup for the whole process, so later offline runs in the same pytest process wrote
    # nothing.)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logged = {}
    original = wandb.Table.add_data

    def add_data(self, *row):
        logged.setdefault("rows", []).append(row)
        return original(self, *row)

    monkeypatch.setattr(wandb.Table, "add_data", add_data)
    board = build_leaderboard(load_runs([sweep]), ["dice/RNFL", "mad_um/ILM"], n_resamples=100)
    log_to_wandb(board, project="octseg-test")
    assert len(logged["rows"]) == 4 and all(
        len(r) == len(LEADERBOARD_COLUMNS) for r in logged["rows"]
    )
    assert wandb.run is None  # finished
    assert list((tmp_path / "wandb").glob("offline-run-*"))
