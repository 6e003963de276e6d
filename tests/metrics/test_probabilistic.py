"""ROC-AUC, AP and Brier score against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from octseg.metrics.probabilistic import score_bins
from octseg.metrics.suite import MetricSuite


def _case(seed: int, k: int = 4):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (2, 12, 10), generator=gen)
    logits = torch.randn(2, k, 12, 10, generator=gen) + 2.0 * torch.nn.functional.one_hot(
        target, k
    ).permute(0, 3, 1, 2)
    target[0, :2] = 255
    return logits.softmax(1), target


@pytest.mark.parametrize("seed", [0, 1])
def test_auc_ap_equal_sklearn_on_binned_scores_and_close_on_raw(seed: int) -> None:
    k, bins = 4, 1000
    probs, target = _case(seed, k)
    suite = MetricSuite(
        families=["probabilistic"],
        num_classes=k,
        include_background=True,
        preds_are_probabilities=True,
        options={"probabilistic": {"num_bins": bins}},
    )
    suite.update(probs, target)
    out = suite.compute()
    valid = (target != 255).numpy()
    bin_maps = score_bins(probs, bins).numpy()
    for c in range(k):
        y = (target.numpy() == c)[valid]
        p = probs[:, c].numpy()[valid]
        binned = bin_maps[:, c][valid]
        assert out[f"auroc/class_{c}"].item() == pytest.approx(roc_auc_score(y, binned), abs=1e-6)
        assert out[f"ap/class_{c}"].item() == pytest.approx(
            average_precision_score(y, binned), abs=1e-6
        )
        assert out[f"auroc/class_{c}"].item() == pytest.approx(roc_auc_score(y, p), abs=5e-3)
    onehot = np.eye(k)[np.where(valid, target.numpy(), 0)]
    brier = ((probs.permute(0, 2, 3, 1).numpy() - onehot) ** 2).sum(-1)[valid].mean()
    assert out["brier"].item() == pytest.approx(brier, rel=1e-5)


def test_absent_class_is_nan_not_zero() -> None:
    probs, target = _case(3, 4)
    target[target == 3] = 0
    suite = MetricSuite(families=["probabilistic"], num_classes=4, preds_are_probabilities=True)
    suite.update(probs, target)
    out = suite.compute()
    assert math.isnan(out["auroc/class_3"].item()) and math.isnan(out["ap/class_3"].item())
    assert not math.isnan(out["auroc"].item())


def test_label_predictions_leave_probabilistic_nan() -> None:
    _, target = _case(4, 4)
    suite = MetricSuite(families=["overlap", "probabilistic"], num_classes=4)
    suite.update(target.clamp_max(3), target)
    assert math.isnan(suite.compute()["auroc"].item())
