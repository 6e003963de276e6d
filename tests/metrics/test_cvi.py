"""CVI family on a hand-built choroid."""

from __future__ import annotations

import pytest
import torch

from octseg.metrics.suite import MetricSuite
from tests.metrics.metric_cases import make_suite


def test_cvi_on_hand_built_choroid() -> None:
    anatomy = {"ordered_labels": [0, 1, 2], "lumen_labels": [2], "choroid_labels": [1]}
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, 5:, :] = 1
    target[0, 6:8, 2:7] = 2  # lumen: 10 of 50 choroid pixels -> CVI 0.2
    pred = target.clone()
    pred[0, 8, 2:7] = 2  # 15 of 50 -> 0.3
    suite = MetricSuite(families=["cvi"], num_classes=3, anatomy=anatomy)
    suite.update(pred, target)
    out = suite.compute()
    assert out["cvi_true"].item() == pytest.approx(0.2)
    assert out["cvi_pred"].item() == pytest.approx(0.3)
    assert out["cvi_abs_err"].item() == pytest.approx(0.1)
    inactive = make_suite(["cvi"])
    inactive.update(target * 0, target * 0)
    assert "cvi_abs_err" not in inactive.compute()  # no lumen labels: inactive
