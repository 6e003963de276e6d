"""IslamModule: decoded label maps in evaluation, per-surface uncertainty in micrometres, and
fast dev runs through train.py on synthetic and on real Duke data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import hydra
import pytest
import torch

from octseg.data.base import PadCollate
from octseg.metrics.surfaces import extract_surfaces
from octseg.training import train
from tests.conftest import requires_duke
from tests.models.model_checks import banded_batch

# A narrow network: the module's logic, not the official widths, is under test here.
TINY = [
    "model.net.encoder_channels=[8,16,32,64]",
    "model.net.bottleneck_channels=64",
    "model.net.decoder_channels=[32,16]",
    "model.net.head_channels=[8]",
    "model.net.head_aspp_channels=4",
]
SURFACES = ["ILM", "RNFL-GCL", "IPL-INL", "INL-OPL", "OPL-ONL", "ISM-ISE", "ISE-OS", "RPE-BM"]


def _module(make_cfg):
    cfg = make_cfg("model=islam", "loss=islam", *TINY)
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model)


def _batch() -> dict:
    """Two banded B-scans of different sizes, padded together (spacing 3.87 / 5.0 um axial)."""
    samples = []
    for i, (h, w, axial) in enumerate([(40, 50, 3.87), (33, 41, 5.0)]):
        toy = banded_batch(9, h, w, shifts=(0,))
        samples.append({
            "image": toy["image"][0], "mask": toy["mask"][0], "case_id": f"scan_{i}",
            "volume_id": f"vol_{i}", "volume_index": i, "bscan_index": 0,
            "orig_hw": torch.tensor([h, w]), "spacing_um": torch.tensor([axial, 11.0, 120.0]),
        })  # fmt: skip
    return PadCollate(255)(samples)


def test_predict_step_returns_ordered_label_maps_and_sigma_in_um(make_cfg) -> None:
    module = _module(make_cfg).eval()
    assert module.surface_names == SURFACES
    batch = _batch()
    with torch.no_grad():
        items = module.predict_step(batch, 0)
    assert [tuple(i["pred"].shape) for i in items] == [(40, 50), (33, 41)]
    for item, axial in zip(items, (3.87, 5.0), strict=True):
        z, _ = extract_surfaces(item["pred"][None], list(range(9)))
        assert (z[:, 1:] >= z[:, :-1]).all()
        assert item["probs"].shape[0] == 10
        torch.testing.assert_close(item["probs"].sum(0), torch.ones(item["pred"].shape))
        # Untrained log-variance heads start at 0: sigma is exactly 1 px, i.e. the axial spacing.
        assert list(item["uncertainty"]) == [f"sigma_um/{s}" for s in SURFACES]
        assert all(v == pytest.approx(axial) for v in item["uncertainty"].values())


def test_evaluation_logits_are_the_decoded_label_maps(make_cfg) -> None:
    module = _module(make_cfg).eval()
    batch = _batch()
    with torch.no_grad():
        output, losses = module.model_step(batch)
        items = module.predict_step(batch, 0)
    assert torch.isfinite(losses["loss"]) and "sdf_nll" in losses
    assert set(output.logits.unique().tolist()) <= {0.0, 1.0}
    for i, item in enumerate(items):
        h, w = item["pred"].shape
        assert torch.equal(output.logits[i, :, :h, :w].argmax(0), item["pred"])


def test_other_losses_warn(make_cfg, caplog) -> None:
    cfg = make_cfg("model=islam", *TINY)
    with caplog.at_level("WARNING"):
        hydra.utils.instantiate(cfg.model)
    assert "loss=islam" in caplog.text


def _check_report(run: Path, surfaces: list[str]) -> None:
    with open(run / "uncertainty.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["name"] for r in rows} == {f"sigma_um/{s}" for s in surfaces}
    assert all(float(r["value"]) > 0 for r in rows)
    report = json.loads((run / "metrics.json").read_text())
    assert set(report["uncertainty"]) == {f"sigma_um/{s}" for s in surfaces}
    assert (run / "boundaries.csv").is_file() and "mad_um" in report["dataset"]


@pytest.mark.slow
def test_fast_dev_run_on_synthetic(make_cfg) -> None:
    cfg = make_cfg("model=islam", "loss=islam", "debug=fdr", *TINY)
    metrics = train(cfg)
    assert "test/mad_um" in metrics and metrics["test/topology_violation_rate"] == 0.0
    _check_report(Path(cfg.paths.output_dir), SURFACES)


@pytest.mark.slow
@pytest.mark.realdata
@requires_duke()
def test_fast_dev_run_on_duke(make_cfg) -> None:
    from tests.conftest import SHARED_DIR

    cfg = make_cfg(
        "experiment=islam_duke", "debug=fdr", f"paths.data_dir={SHARED_DIR / 'datasets'}",
        "metrics=layers", "logger=csv", "~callbacks.rich_progress_bar",
        "~callbacks.model_summary", *TINY, fast=False,
    )  # fmt: skip
    metrics = train(cfg)
    assert metrics["test/topology_violation_rate"] == 0.0
    _check_report(Path(cfg.paths.output_dir), SURFACES)
