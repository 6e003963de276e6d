"""Every conf/metrics/*.yaml instantiates with every dataset config and computes its keys."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from octseg.metrics.suite import MetricSuite

CONF = Path(__file__).resolve().parents[2] / "conf"
SUITES = sorted(p.stem for p in (CONF / "metrics").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))


def test_the_four_suites_exist() -> None:
    assert {"fast", "layers", "fluid", "full"} <= set(SUITES)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("suite_name", SUITES)
def test_suite_config_instantiates_and_computes(suite_name: str, dataset: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="eval", overrides=[f"dataset={dataset}", f"metrics={suite_name}"]
        )
    suite = hydra.utils.instantiate(cfg.metrics)
    assert isinstance(suite, MetricSuite)
    k = int(cfg.dataset.num_classes)
    # Layer datasets get their ordered layers, the others a stack of all labels.
    ordered = list(OmegaConf.select(cfg, "dataset.anatomy.ordered_labels") or range(k))
    rows = torch.arange(40).view(40, 1).expand(40, 24)
    target = torch.as_tensor(ordered)[(rows * len(ordered)) // 40][None].long()
    logits = torch.randn(1, k, 40, 24)
    suite.update(logits, target, torch.tensor([0]))
    out = suite.compute()
    assert "dice" in out and all(v.ndim == 0 for v in out.values())
    if "boundary" in suite.families:
        assert "mad_um" in out
