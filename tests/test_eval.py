"""eval.py: checkpoint round trip and prediction-folder evaluation, through the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from octseg.training import train
from tests.conftest import REPO_ROOT


def _eval_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OCTSEG_LOG_DIR=str(cwd / "logs"), PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(REPO_ROOT / "eval.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _single(root: Path, name: str) -> Path:
    found = list(root.rglob(name))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from tests.conftest import compose_config

    out = tmp_path_factory.mktemp("trained")
    cfg = compose_config(out / "run", ["trainer.max_epochs=1", "dataset.datamodule.width=133"])
    train(cfg)
    return out / "run"


def test_eval_checkpoint_round_trip(trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    proc = _eval_cli([f"ckpt_path={ckpt}", "save_predictions=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dice" in proc.stdout
    metrics_file = _single(tmp_path / "logs", "metrics.json")
    out = metrics_file.parent
    result = json.loads(metrics_file.read_text())
    trained = json.loads((trained_run / "metrics.json").read_text())["dataset"]
    # The same weights on the same test split give the same Dice through both code paths
    # (batched torchmetrics in training, per-scan at original size in eval.py).
    assert result["dataset"]["dice"] == pytest.approx(trained["dice"], rel=1e-5)
    with open(out / "per_scan.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"scan", "class", "dice", "hd95_um", "assd_um"} <= set(rows[0])
    scans = {r["scan"] for r in rows}
    assert len(scans) == 4  # synthetic_small test split
    assert (out / "boundaries.csv").is_file() and (out / "thickness.csv").is_file()
    pngs = sorted((out / "predictions").glob("*.png"))
    assert {p.stem for p in pngs} == scans
    assert np.asarray(Image.open(pngs[0])).shape == (128, 133)  # original, unpadded size
    assert result["settings"]["postprocess"] is None


def test_eval_checkpoint_with_topology_postprocessing(trained_run: Path, tmp_path: Path) -> None:
    from octseg.metrics.topology import order_violation_rate

    ckpt = trained_run / "checkpoints" / "best.ckpt"
    proc = _eval_cli([f"ckpt_path={ckpt}", "save_predictions=true", "postprocess=topology"],
                     tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics_file = _single(tmp_path / "logs", "metrics.json")
    result = json.loads(metrics_file.read_text())
    assert result["settings"]["postprocess"] == "topology"
    assert result["dataset"]["topology_violation_rate"] == 0.0
    assert result["settings"]["num_scans"] == 4
    # Every column of the saved label maps is ordered, not only the annotated ones.
    for png in sorted((metrics_file.parent / "predictions").glob("*.png")):
        labels = torch.from_numpy(np.asarray(Image.open(png)).astype(np.int64))
        assert order_violation_rate(labels, list(range(9))) == 0.0


def test_eval_checkpoint_on_the_validation_split(trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    # eval.py's own settings (precision, device) are not carried into the run config.
    args = [f"ckpt_path={ckpt}", "split=val", "precision=bf16-mixed", "device=cpu"]
    proc = _eval_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(_single(tmp_path / "logs", "metrics.json").read_text())
    assert result["run"]["evaluated_split"] == "val"
    # The checkpoint was kept for its validation Dice: the same weights on the same split.
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["callbacks"]
    key = "ModelCheckpoint{'monitor': 'val/dice'"
    best = next(v["best_model_score"] for k, v in state.items() if k.startswith(key))
    assert result["dataset"]["dice"] == pytest.approx(float(best), abs=0.02)  # bf16 vs fp32
    proc = _eval_cli([f"ckpt_path={ckpt}", "split=train"], tmp_path)
    assert proc.returncode != 0 and "split='train'" in proc.stderr


def test_eval_rejects_unknown_postprocessing(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gt_dir / "a_00.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred_dir / "a_00.png")
    args = [f"pred_dir={pred_dir}", f"gt_dir={gt_dir}", "num_classes=2", "spacing_um=[4,10]"]
    proc = _eval_cli([*args, "postprocess=crf"], tmp_path)
    assert proc.returncode != 0 and "valid values: null, none, topology" in proc.stderr
    proc = _eval_cli([*args, "postprocess=topology"], tmp_path)
    assert proc.returncode != 0 and "add dataset=<name>" in proc.stderr


def test_eval_prediction_folders(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for i in range(3):
        gt = np.zeros((40, 30), np.uint8)
        gt[10:25] = 1
        gt[25:] = 2
        pred = np.roll(gt, 1, axis=0)
        Image.fromarray(gt).save(gt_dir / f"vol1_{i:02d}.png")
        np.save(pred_dir / f"vol1_{i:02d}.npy", pred)
    proc = _eval_cli([f"pred_dir={pred_dir}", f"gt_dir={gt_dir}", "num_classes=3",
                      "spacing_um=[4.0,10.0]"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(_single(tmp_path / "logs", "metrics.json").read_text())
    assert 0.9 < result["dataset"]["dice"] < 1.0
    # A one-row shift of every boundary is one axial pixel: 4 um.
    assert result["dataset"]["hd_um/class_1"] == pytest.approx(4.0)


def test_eval_rejects_missing_and_corrupt_checkpoints(tmp_path: Path) -> None:
    proc = _eval_cli([f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path)
    assert proc.returncode != 0 and "nope.ckpt: no such file" in proc.stderr
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(b"not a checkpoint")
    proc = _eval_cli([f"ckpt_path={bad}"], tmp_path)
    assert proc.returncode != 0 and "corrupt.ckpt could not be read" in proc.stderr
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    proc = _eval_cli([f"ckpt_path={tmp_path / 'foreign.ckpt'}"], tmp_path)
    assert proc.returncode != 0 and "not an OCTSeg training checkpoint" in proc.stderr


def test_eval_prediction_folders_require_the_label_set(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gt_dir / "a_00.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred_dir / "a_00.png")
    proc = _eval_cli([f"pred_dir={pred_dir}", f"gt_dir={gt_dir}"], tmp_path)
    assert proc.returncode != 0 and "needs the label set: give num_classes=K" in proc.stderr
    proc = _eval_cli([f"pred_dir={pred_dir}", f"gt_dir={gt_dir}", "num_classes=2"], tmp_path)
    assert proc.returncode != 0 and "spacing_um=[AXIAL_UM,LATERAL_UM]" in proc.stderr
