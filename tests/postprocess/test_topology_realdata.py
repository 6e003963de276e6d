"""Topology post-processing on real Duke DME predictions (skipped without the Duke export)."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import torch

from octseg.evaluation.checkpoint import load_checkpoint
from octseg.evaluation.predictions import predict_scans
from octseg.metrics.topology import order_violation_rate
from octseg.postprocess import build_postprocess
from octseg.training import train
from tests.conftest import SHARED_DIR, requires_duke


@pytest.mark.slow
@pytest.mark.realdata
@requires_duke()
def test_duke_predictions_have_no_order_violations_after_postprocessing(make_cfg) -> None:
    # A briefly trained net (one epoch of 34 steps): its layer order is violated in many columns.
    cfg = make_cfg(
        "experiment=duke_cpu",
        "dataset=duke",  # the fast test overrides pick synthetic_small otherwise
        f"paths.data_dir={SHARED_DIR / 'datasets'}",
        "dataset.datamodule.train_repeats=2",
        "trainer.max_steps=34",
        "trainer.precision=32-true",
        "metrics=layers",
        "postprocess=topology",
    )
    train(cfg)
    out = Path(cfg.paths.output_dir)
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["postprocess"] == "topology"
    assert report["settings"]["num_scans"] == 22  # test subjects 9-10
    assert report["dataset"]["topology_violation_rate"] == 0.0

    # Every column of the full-width scans, not only the annotated ones.
    model = hydra.utils.instantiate(cfg.model)
    model.load_state_dict(load_checkpoint(out / "checkpoints" / "best.ckpt")["state_dict"])
    datamodule = hydra.utils.instantiate(cfg.dataset.datamodule, train_transform=None)
    datamodule.setup("test")
    fn = build_postprocess("topology", cfg.dataset.anatomy)
    ordered = list(cfg.dataset.anatomy.ordered_labels)
    before, after = [], []
    for scan in predict_scans(model, datamodule.test_dataloader()):
        pred = torch.from_numpy(scan.pred)
        before.append(order_violation_rate(pred, ordered))
        fixed = fn(pred)
        after.append(order_violation_rate(fixed, ordered))
        assert torch.equal(fn(fixed), fixed)
    assert len(after) == 22 and max(after) == 0.0
    assert sum(before) / len(before) > 0.01, before  # the test is not vacuous
