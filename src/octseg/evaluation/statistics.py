"""Statistics for comparing runs: mean and SD over runs, bootstrap confidence intervals over
subjects, and paired Wilcoxon signed-rank tests between methods.

Pure functions on numbers (no files); :mod:`octseg.evaluation.leaderboard` applies them to
reports. Values that are not finite (a metric undefined for a subject, e.g. fluid Dice of a
subject without fluid in reference and prediction) are left out of every statistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "MIN_WILCOXON_PAIRS",
    "PairedTest",
    "bootstrap_ci",
    "mean_sd",
    "paired_wilcoxon",
]

#: The fewest pairs for which a two-sided Wilcoxon signed-rank test can reach p < 0.05: with n
#: pairs the smallest exact two-sided p is 2 / 2**n (0.0625 for 5 pairs, 0.03125 for 6).
MIN_WILCOXON_PAIRS = 6


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def mean_sd(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of the finite values.

    Returns:
        ``(mean, sd)``; ``sd`` is NaN for fewer than two values, both are NaN for none.
    """
    arr = _finite(values)
    if arr.size == 0:
        return math.nan, math.nan
    sd = float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan
    return float(np.mean(arr)), sd


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    The units in ``values`` (one value per subject) are resampled with replacement,
    ``n_resamples`` times, all at once (one ``[n_resamples, n]`` index array); the interval
    is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means.

    Args:
        values: one value per resampling unit; non-finite values are left out.
        level: coverage of the interval, in (0, 1).
        n_resamples: number of bootstrap resamples.
        seed: seed of the resampling (the same seed gives the same interval).

    Returns:
        ``(low, high)``: NaN for no values; degenerate (``low == high``) for one value or
        identical values.

    Raises:
        ValueError: for a level outside (0, 1) or fewer than one resample.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}.")
    arr = _finite(values)
    if arr.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_resamples, arr.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    # The mean of identical values can differ from them in the last bit; keep the interval
    # exactly degenerate then.
    if np.all(arr == arr[0]):
        low = high = arr[0]
    return float(low), float(high)


@dataclass(frozen=True)
class PairedTest:
    """A two-sided Wilcoxon signed-rank test of paired values.

    Attributes:
        n_pairs: pairs where both values are finite (the others are left out).
        statistic: scipy's statistic (the smaller of the signed-rank sums); NaN without pairs.
        p_value: two-sided p; 1.0 when every difference is zero; NaN without pairs.
        underpowered: fewer than :data:`MIN_WILCOXON_PAIRS` pairs: p < 0.05 is unreachable.
    """

    n_pairs: int
    statistic: float
    p_value: float
    underpowered: bool


def paired_wilcoxon(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
) -> PairedTest:
    """Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided) of ``a`` against ``b``,
    paired by position.

    With fewer than :data:`MIN_WILCOXON_PAIRS` pairs the test still runs (exact p) but is
    flagged ``underpowered``: no difference can be significant at 5 %.

    Raises:
        ValueError: if ``a`` and ``b`` differ in length.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired values must have the same length, got {x.size} and {y.size}.")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    underpowered = n < MIN_WILCOXON_PAIRS
    if n == 0:
        return PairedTest(0, math.nan, math.nan, True)
    if np.all(x == y):  # scipy divides by zero here; no difference is p = 1
        return PairedTest(n, 0.0, 1.0, underpowered)
    result = stats.wilcoxon(x, y, alternative="two-sided")
    return PairedTest(n, float(result.statistic), float(result.pvalue), underpowered)
