"""Folder evaluation: round trip through PNG/.npy files, report files, bad-input errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from octseg.evaluation import (
    ScanPrediction,
    evaluate_label_maps,
    load_prediction_folders,
    read_report,
    volume_id_from_name,
)
from octseg.evaluation.report import PER_SCAN_COLUMNS, run_identity
from tests.metrics.metric_cases import ANATOMY, CLASS_NAMES, NUM_CLASSES, layered_map

SPACING = [3.87, 11.3]


def _write_folders(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for subject in (1, 2):
        for k in range(2):
            name = f"Subject_0{subject}_0{k}"
            target = layered_map().numpy().astype(np.uint8)
            target[30:33, 4:9] = 9
            pred = layered_map(shift=subject - 1).numpy().astype(np.uint8)
            Image.fromarray(target).save(gt_dir / f"{name}.png")
            if k == 0:
                Image.fromarray(pred).save(pred_dir / f"{name}.png")
            else:
                np.save(pred_dir / f"{name}.npy", pred.astype(np.int64))
    return pred_dir, gt_dir


def test_round_trip_writes_all_reports(tmp_path) -> None:
    pred_dir, gt_dir = _write_folders(tmp_path)
    scans = load_prediction_folders(pred_dir, gt_dir, NUM_CLASSES)
    assert [s.volume_id for s in scans] == ["Subject_01"] * 2 + ["Subject_02"] * 2
    result = evaluate_label_maps(
        scans,
        NUM_CLASSES,
        CLASS_NAMES,
        spacing_um=SPACING,
        anatomy=ANATOMY,
        bscan_spacing_um=123.0,
    )
    paths = result.write(tmp_path / "out")
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(report) == {"format", "format_version", "dataset", "volumes", "settings"}
    assert read_report(tmp_path / "out" / "metrics.json") == report
    assert report["volumes"]["Subject_01"]["mad_um"] == 0.0
    assert report["volumes"]["Subject_02"]["mad_um"] == pytest.approx(3.87)
    assert report["dataset"]["mad_um"] == pytest.approx(3.87 / 2)
    with open(paths["per_scan"]) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == PER_SCAN_COLUMNS
    assert len(rows) == 4 * NUM_CLASSES
    first_fluid = next(r for r in rows if r["scan"] == "Subject_01_00" and r["class"] == "9")
    assert float(first_fluid["recall"]) == 0.0 and math.isinf(float(first_fluid["hd95_um"]))
    with open(paths["boundaries"]) as f:
        brows = list(csv.DictReader(f))
    assert list(brows[0]) == [
        "scan",
        "surface",
        "mad_um",
        "bias_um",
        "rmse_um",
        "max_um",
        "surface_name",
    ]
    assert len(brows) == 4 * 8
    with open(paths["thickness"]) as f:
        trows = list(csv.DictReader(f))
    assert list(trows[0])[:3] == ["scan", "layer", "mean_abs_err_um"]
    table = result.format_table()
    assert "RNFL" in table and "mean (foreground)" in table and "ILM" in table


def test_in_memory_scans_with_probabilities() -> None:
    target = layered_map().numpy()
    probs = np.eye(NUM_CLASSES)[target].transpose(2, 0, 1) * 0.9 + 0.01
    scans = [ScanPrediction("a_0", "a", target, target, probs)]
    result = evaluate_label_maps(
        scans, NUM_CLASSES, CLASS_NAMES, spacing_um=SPACING, anatomy=ANATOMY
    )
    assert result.dataset["auroc/RNFL"] == pytest.approx(1.0)
    assert result.dataset["dice"] == pytest.approx(1.0)


def test_per_scan_uncertainty_is_written_when_given(tmp_path) -> None:
    target = layered_map().numpy()
    scans = [
        ScanPrediction("a_0", "a", target, target, uncertainty={"sigma_um/ILM": 2.0, "x": 1.0}),
        ScanPrediction("a_1", "a", target, target, uncertainty={"sigma_um/ILM": 4.0,
                                                                 "x": math.nan}),
        ScanPrediction("a_2", "a", target, target),  # a scan without values adds no rows
    ]  # fmt: skip
    result = evaluate_label_maps(scans, NUM_CLASSES, CLASS_NAMES, spacing_um=SPACING)
    paths = result.write(tmp_path)
    with open(paths["uncertainty"]) as f:
        rows = list(csv.DictReader(f))
    assert [(r["scan"], r["name"], float(r["value"])) for r in rows[:3]] == [
        ("a_0", "sigma_um/ILM", 2.0), ("a_0", "x", 1.0), ("a_1", "sigma_um/ILM", 4.0),
    ]  # fmt: skip
    assert len(rows) == 4
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["uncertainty"] == {"sigma_um/ILM": 3.0, "x": 1.0}  # NaN skipped
    assert read_report(tmp_path / "metrics.json") == report


def test_volume_id_rule() -> None:
    assert volume_id_from_name("Subject_09_03") == "Subject_09"
    assert volume_id_from_name("scan") == "scan"


def test_bad_inputs_name_the_file(tmp_path) -> None:
    pred_dir, gt_dir = _write_folders(tmp_path)
    (pred_dir / "Subject_02_01.npy").unlink()
    with pytest.raises(FileNotFoundError, match="Subject_02_01"):
        load_prediction_folders(pred_dir, gt_dir, NUM_CLASSES)
    np.save(pred_dir / "Subject_02_01.npy", np.zeros((5, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="Subject_02_01.npy.*original size"):
        load_prediction_folders(pred_dir, gt_dir, NUM_CLASSES)
    np.save(pred_dir / "Subject_02_01.npy", np.full((60, 32), 12, dtype=np.int64))
    with pytest.raises(ValueError, match="Subject_02_01.npy.*num_classes"):
        load_prediction_folders(pred_dir, gt_dir, NUM_CLASSES)
    np.save(pred_dir / "Subject_02_01.npy", np.full((60, 32), 0.5))
    with pytest.raises(ValueError, match="integer"):
        load_prediction_folders(pred_dir, gt_dir, NUM_CLASSES)
    np.save(pred_dir / "Subject_02_01.npy", np.zeros((60, 32), dtype=np.int64))
    np.save(pred_dir / "extra_scan.npy", np.zeros((60, 32), dtype=np.int64))
    with pytest.raises(FileNotFoundError, match="extra_scan"):
        load_prediction_folders(pred_dir, gt_dir, NUM_CLASSES)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prediction_folders(tmp_path / "nope", gt_dir, NUM_CLASSES)
    with pytest.raises(ValueError, match="No scans"):
        evaluate_label_maps([], NUM_CLASSES)


def test_run_identity_from_composed_configs(make_cfg) -> None:
    cfg = make_cfg("model=unet", "seed=3")
    assert run_identity(cfg) == {
        "model": "unet",
        "experiment": "default",
        "dataset": "synthetic_small",
        "unlabelled": None,
        "split": None,
        "fold": None,
        "seed": 3,
    }
    duke = make_cfg(
        "experiment=duke_cpu", "dataset.split=kfold", "dataset.fold=2", fast=False, subdir="d"
    )
    identity = run_identity(duke)
    assert identity["model"] == "unet_small" and identity["experiment"] == "duke_cpu"
    assert (identity["dataset"], identity["split"], identity["fold"]) == ("duke", "kfold", 2)
    semi = make_cfg("experiment=sd_layernet_duke_semi", "+dataset@unlabelled=kermany",
                    fast=False, subdir="s")  # fmt: skip
    assert run_identity(semi)["unlabelled"] == "kermany"
