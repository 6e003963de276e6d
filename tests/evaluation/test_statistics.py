"""Statistics of leaderboards on hand-made values with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from octseg.evaluation.statistics import (
    MIN_WILCOXON_PAIRS,
    bootstrap_ci,
    mean_sd,
    paired_wilcoxon,
)


def test_mean_sd_exact_and_edge_cases() -> None:
    mean, sd = mean_sd([0.80, 0.84, 0.88])
    assert mean == pytest.approx(0.84)
    assert sd == pytest.approx(0.04)  # sample SD (ddof=1)
    assert mean_sd([0.5, math.nan]) == (0.5, pytest.approx(math.nan, nan_ok=True))
    assert all(math.isnan(v) for v in mean_sd([]))


def test_bootstrap_ci_of_identical_values_is_degenerate() -> None:
    assert bootstrap_ci([0.7] * 8) == (0.7, 0.7)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan]))


def test_bootstrap_ci_is_seeded_brackets_the_mean_and_matches_a_loop() -> None:
    values = np.array([0.62, 0.71, 0.75, 0.80, 0.83, 0.90])
    low, high = bootstrap_ci(values, level=0.9, n_resamples=2000, seed=3)
    assert (low, high) == bootstrap_ci(values, level=0.9, n_resamples=2000, seed=3)
    assert low < values.mean() < high
    assert values.min() <= low and high <= values.max()
    # The vectorised resampling equals the obvious loop with the same generator.
    rng = np.random.default_rng(3)
    idx = rng.integers(0, values.size, size=(2000, values.size))
    means = [values[row].mean() for row in idx]
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])))
    wider = bootstrap_ci(values, level=0.99, n_resamples=2000, seed=3)
    assert wider[0] <= low and wider[1] >= high


def test_bootstrap_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)


def test_paired_wilcoxon_equals_scipy_and_flags_few_pairs() -> None:
    a = [0.81, 0.85, 0.79, 0.88, 0.90, 0.84, 0.86, 0.83]
    b = [0.80, 0.82, 0.80, 0.85, 0.86, 0.80, 0.81, 0.84]
    test = paired_wilcoxon(a, b)
    expected = stats.wilcoxon(a, b)
    assert test.p_value == pytest.approx(expected.pvalue)
    assert test.statistic == pytest.approx(expected.statistic)
    assert test.n_pairs == 8 and not test.underpowered
    # Five pairs, all in one direction: the smallest exact two-sided p, 2 / 2**5.
    few = paired_wilcoxon(a[:5], [x - 0.1 for x in a[:5]])
    assert few.n_pairs == 5 < MIN_WILCOXON_PAIRS and few.underpowered
    assert few.p_value == pytest.approx(0.0625)


def test_paired_wilcoxon_drops_unfinished_pairs_and_handles_no_difference() -> None:
    test = paired_wilcoxon([1.0, math.nan, 3.0], [1.5, 2.0, math.nan])
    assert test.n_pairs == 1
    same = paired_wilcoxon([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.p_value == 1.0 and same.n_pairs == 3
    empty = paired_wilcoxon([math.nan], [1.0])
    assert empty.n_pairs == 0 and math.isnan(empty.p_value)
    with pytest.raises(ValueError, match="same length"):
        paired_wilcoxon([1.0, 2.0], [1.0])
