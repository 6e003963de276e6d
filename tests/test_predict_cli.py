"""predict.py: new scans of every supported kind, fold ensembles, vendor volumes, post-processing
hooks and errors; eval.py with a list of checkpoints and tta."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from octseg.evaluation.commands import evaluate_checkpoint
from octseg.evaluation.predict_command import predict_command
from octseg.training import train
from octseg.utils.config import compose
from tests.conftest import REPO_ROOT, SHARED_DIR, compose_config

FIXTURES = SHARED_DIR / "datasets" / "fixtures"
SYNTHETIC_LAYERS = 7  # synthetic_small: layers RNFL .. OS+RPE


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny unet_small checkpoint on synthetic data, and a second "fold": the same network
    with perturbed weights, saved as an OCTSeg checkpoint of its own."""
    out = tmp_path_factory.mktemp("trained")
    cfg = compose_config(out / "run", ["model=unet_small", "+trainer.limit_train_batches=2",
                                       "+trainer.limit_val_batches=1"])  # fmt: skip
    train(cfg)
    GlobalHydra.instance().clear()
    first = out / "run" / "checkpoints" / "best.ckpt"
    ckpt = torch.load(first, map_location="cpu", weights_only=False)
    gen = torch.Generator().manual_seed(0)
    for key, value in ckpt["state_dict"].items():
        if value.is_floating_point() and value.dim() > 1:
            ckpt["state_dict"][key] = value + value.std() * torch.randn(value.shape, generator=gen)
    second = out / "fold1" / "checkpoints" / "best.ckpt"
    second.parent.mkdir(parents=True)
    torch.save(ckpt, second)
    return first, second


def _predict(out: Path, *overrides: str) -> Path:
    cfg = compose("predict", [f"output_dir={out}", *overrides], output_dir=out / "hydra")
    try:
        return predict_command(cfg)
    finally:
        GlobalHydra.instance().clear()


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _write_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray((rng.random((97, 61)) * 90).astype(np.uint8)).save(folder / "grey8.png")
    Image.fromarray((rng.random((70, 133)) * 20000).astype(np.uint16)).save(folder / "grey16.png")
    rgb = (rng.random((64, 80, 3)) * 60).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "colour.png")
    tifffile.imwrite(folder / "stack.tif", (rng.random((3, 50, 44)) * 60).astype(np.uint8),
                     photometric="minisblack")  # fmt: skip
    np.save(folder / "cube.npy", rng.random((4, 45, 37), dtype=np.float32) * 0.3)
    return {"grey8": (97, 61), "grey16": (70, 133), "colour": (64, 80), "stack_000": (50, 44),
            "cube_003": (45, 37)}  # fmt: skip


@pytest.mark.slow
def test_predict_cli_on_images_stacks_and_arrays(checkpoints, tmp_path: Path) -> None:
    sizes = _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    env = dict(os.environ, OCTSEG_LOG_DIR=str(tmp_path / "logs"), PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "predict.py"), f"ckpt_path={checkpoints[0]}",
         f"input={tmp_path / 'in'}", f"output_dir={out}", "spacing_um=[3.87,11.3,60]",
         "save_probabilities=true"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for scan, size in sizes.items():
        volume = scan.rsplit("_", 1)[0] if scan[-1].isdigit() else scan
        with Image.open(out / volume / "labels" / f"{scan}.png") as img:
            assert img.mode == "P" and img.size == (size[1], size[0])  # original size
            labels = np.asarray(img)
        probs = np.load(out / volume / "probabilities" / f"{scan}.npz")["probs"]
        assert probs.shape == (10, *size)
        # The labels are the argmax (up to ties in the float16 file).
        at_label = np.take_along_axis(probs, labels[None].astype(np.int64), 0)[0]
        assert np.all(at_label >= probs.max(0) - 1e-3)
        with Image.open(out / volume / "overlays" / f"{scan}.png") as img:
            assert img.mode == "RGB" and img.size == (size[1], size[0])
        surfaces = _rows(out / volume / "surfaces" / f"{scan}.csv")
        assert len(surfaces) == size[1] and "ILM_um" in surfaces[0]
    summary = _rows(out / "summary.csv")
    assert len(summary) == 3 + 3 + 4
    cube = np.load(out / "cube" / "thickness" / "total_retina.npy")
    assert cube.shape == (4, 37)
    assert (out / "cube" / "thickness" / "RNFL.png").is_file()
    etdrs = _rows(out / "etdrs.csv")
    volumes = {str(tmp_path / "in" / name) for name in ("cube.npy", "stack.tif")}
    assert {r["input"] for r in etdrs} == volumes
    assert len(etdrs) == 2 * (SYNTHETIC_LAYERS + 1) * 9


def test_fold_ensemble_averages_the_probabilities(checkpoints, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    Image.fromarray((rng.random((60, 70)) * 80).astype(np.uint8)).save(tmp_path / "in" / "a.png")
    a, b = checkpoints
    single = []
    for i, ckpt in enumerate(checkpoints):
        _predict(tmp_path / f"m{i}", f"ckpt_path={ckpt}", f"input={tmp_path / 'in'}",
                 "save_probabilities=true")  # fmt: skip
        single.append(np.load(tmp_path / f"m{i}" / "a" / "probabilities" / "a.npz")["probs"])
    _predict(tmp_path / "ens", f"ckpt_path=[{a},{b}]", f"input={tmp_path / 'in'}",
             "save_probabilities=true")  # fmt: skip
    ensemble = np.load(tmp_path / "ens" / "a" / "probabilities" / "a.npz")["probs"]
    assert not np.allclose(single[0], single[1], atol=1e-2)
    mean = (single[0].astype(np.float32) + single[1].astype(np.float32)) / 2
    np.testing.assert_allclose(ensemble.astype(np.float32), mean, atol=3e-4)  # float16 files


def test_ensemble_of_different_classes_is_refused(checkpoints, tmp_path: Path) -> None:
    ckpt = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    ckpt["octseg_overrides"] = [*ckpt["octseg_overrides"], "dataset.num_classes=5"]
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "in" / "a.png")
    with pytest.raises(ValueError, match=r"dataset.num_classes: .*best.ckpt has 10, .*other.ckpt"
                                         r" has 5"):  # fmt: skip
        _predict(tmp_path / "out", f"ckpt_path=[{checkpoints[0]},{other}]",
                 f"input={tmp_path / 'in'}")  # fmt: skip


@pytest.mark.parametrize("fixture", ["heyex_vol/test_volume.vol", "heyex_xml/test_volume"])
def test_vendor_volumes(checkpoints, tmp_path: Path, fixture: str) -> None:
    source = FIXTURES / fixture
    if not source.exists():
        pytest.skip(f"fixture {source} absent")
    _predict(tmp_path / "out", f"ckpt_path={checkpoints[0]}", f"input={source}", "tta=flip")
    name = Path(fixture).stem if source.is_file() else source.name
    folder = tmp_path / "out" / name
    labels = sorted((folder / "labels").glob("*.png"))
    assert len(labels) == 10
    with Image.open(labels[0]) as img:
        assert img.size == (50, 40)
    assert np.load(folder / "thickness" / "total_retina.npy").shape == (10, 50)
    etdrs = _rows(tmp_path / "out" / "etdrs.csv")
    assert {r["laterality"] for r in etdrs} == {"OD"}
    central = [r for r in etdrs if r["sector"] == "central"]
    assert len(central) == SYNTHETIC_LAYERS + 1 and all(int(r["n_ascans"]) > 0 for r in central)
    summary = _rows(tmp_path / "out" / "summary.csv")
    assert float(summary[0]["lateral_um"]) == pytest.approx(11.819, abs=1e-3)


def test_mismatched_inputs_warn_and_bad_files_are_named(checkpoints, tmp_path, caplog) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((40, 30), 230, np.uint8)).save(tmp_path / "in" / "bright.png")
    with caplog.at_level(logging.WARNING):
        _predict(tmp_path / "out", f"ckpt_path={checkpoints[0]}", f"input={tmp_path / 'in'}",
                 "spacing_um=[7.0,11.3]")  # fmt: skip
    text = caplog.text
    assert "bright.png: mean intensity 0.902" in text
    assert "bright.png: axial spacing 7.00 um per pixel" in text
    assert "bright.png: B-scans of 40 x 30 pixels while the training B-scans are 128 x 128" in text
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="broken.png could not be read"):
        _predict(tmp_path / "out2", f"ckpt_path={checkpoints[0]}", f"input={tmp_path / 'in'}")


def test_postprocess_topology_orders_every_column(checkpoints, tmp_path: Path) -> None:
    """``postprocess=topology`` applies octseg.postprocess to every label map: a barely trained
    network's order violations are gone from the written maps."""
    from octseg.metrics.topology import order_violation_rate

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 45), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    for name, extra in (("raw", []), ("post", ["postprocess=topology"])):
        _predict(tmp_path / name, f"ckpt_path={checkpoints[0]}", f"input={tmp_path / 'in'}",
                 *extra)  # fmt: skip
    rates = {}
    for name in ("raw", "post"):
        with Image.open(tmp_path / name / "a" / "labels" / "a.png") as img:
            labels = torch.as_tensor(np.asarray(img).astype(np.int64))
        rates[name] = order_violation_rate(labels, list(range(9)))
    assert rates["raw"] > 0  # the test can fail: the raw map is out of order somewhere
    assert rates["post"] == 0
    with pytest.raises(ValueError, match="postprocess"):
        _predict(tmp_path / "bad", f"ckpt_path={checkpoints[0]}", f"input={tmp_path / 'in'}",
                 "postprocess=smooth")  # fmt: skip


def test_eval_of_a_fold_ensemble_with_tta(checkpoints, tmp_path: Path) -> None:
    a, b = checkpoints
    cfg = compose("eval", [f"ckpt_path=[{a},{b}]", "tta=flip"], output_dir=tmp_path / "eval")
    try:
        result = evaluate_checkpoint(cfg)
    finally:
        GlobalHydra.instance().clear()
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["run"]["ckpt_path"] == [str(a.resolve()), str(b.resolve())]
    assert report["run"]["tta"] == "flip"
    assert 0.0 <= result.dataset["dice"] <= 1.0
