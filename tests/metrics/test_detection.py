"""B-scan-level detection AUROC: the rank estimate by hand, the three score sources, ties."""

from __future__ import annotations

import math

import pytest
import torch

from octseg.metrics.detection import rank_auroc
from octseg.metrics.suite import MetricSuite


def test_rank_auroc_by_hand() -> None:
    scores = torch.tensor([0.9, 0.4, 0.4, 0.1, 0.6])
    positive = torch.tensor([True, True, False, False, False])
    # pairs (pos, neg): 0.9 beats all 3; 0.4 ties 0.4, beats 0.1, loses to 0.6 -> 1.5
    assert float(rank_auroc(scores, positive)) == pytest.approx(4.5 / 6)
    assert math.isnan(float(rank_auroc(scores, torch.ones(5, dtype=torch.bool))))


def _masks() -> torch.Tensor:
    target = torch.zeros(4, 6, 6, dtype=torch.long)
    target[0, 1, 1] = 1  # scans 0 and 2 hold class 1
    target[2, 3:5, 3:5] = 1
    target[3] = 255  # nothing annotated: left out
    return target


def _suite() -> MetricSuite:
    return MetricSuite(families=["detection"], num_classes=2, class_names=["rest", "fluid"])


def test_scan_scores_rank_the_scans() -> None:
    suite = _suite()
    target = _masks()
    scores = torch.tensor([[math.nan, 0.8], [math.nan, 0.3], [math.nan, 0.2], [math.nan, 9.0]])
    suite.update(torch.zeros_like(target), target, scan_scores=scores)
    out = suite.compute()
    # positives 0.8, 0.2 vs negative 0.3: one of two pairs ordered
    assert float(out["detection_auroc/fluid"]) == pytest.approx(0.5)
    assert float(out["detection_auroc"]) == pytest.approx(0.5)  # background not reported
    assert math.isnan(float(out["detection_auroc/rest"]))  # NaN scores


def test_probabilities_use_the_peak_and_label_maps_the_fraction() -> None:
    target = _masks()
    probs = torch.zeros(4, 2, 6, 6)
    probs[:, 0] = 1
    probs[0, :, 1, 1] = torch.tensor([0.1, 0.9])
    probs[1, :, 0, 0] = torch.tensor([0.5, 0.5])
    probs[2, :, 4, 4] = torch.tensor([0.4, 0.6])
    suite = _suite()
    suite.update(probs, target, probs=probs)
    assert float(suite.compute()["detection_auroc/fluid"]) == pytest.approx(1.0)
    labels = torch.zeros_like(target)
    labels[0, :3] = 1  # fractions: positives 0.5 (scan 0) and 0 (scan 2), negative 1/36
    labels[1, 0, 0] = 1
    suite = _suite()
    suite.update(labels, target)
    assert float(suite.compute()["detection_auroc/fluid"]) == pytest.approx(0.5)


def test_bad_score_shape_is_refused() -> None:
    target = _masks()
    with pytest.raises(ValueError, match="scan_scores must be"):
        _suite().update(torch.zeros_like(target), target, scan_scores=torch.zeros(4, 3))
