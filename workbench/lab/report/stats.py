"""Seed statistics for reports: Student-t intervals of a mean and paired t-tests across seeds.

Pure functions of plain numbers (numpy and scipy.stats only), so each can be checked by hand.
Seeds are the replicates: a configuration's value is estimated by the mean over its seeds, and
two configurations are compared on the seeds both ran (same seed, same data split and init).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.core.lazy import lazy

stats = lazy("scipy.stats")  # a second per process: the point notebooks' figures never need it

CONFIDENCE = 0.95
INTERVAL = (
    "95% confidence interval of the mean over seeds: Student-t with n−1 degrees of "
    "freedom (mean ± t·s/√n, s the sample standard deviation of the n seed values); an "
    "accuracy's interval is shown cut to [0%, 100%] (with few, spread seeds it can reach past "
    "them, a sign that the seeds disagree widely)"
)
PAIRED = (
    "paired t-test across seeds (scipy.stats.ttest_rel, two-sided): the per-seed "
    "differences are tested against 0; their mean carries the same Student-t interval"
)


@dataclass(frozen=True)
class Estimate:
    """A mean over n seed values with its confidence interval (low/high are NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN without an interval)."""
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class PairedTest:
    """Difference a − b over the seeds both have: its mean and interval, and the t-test."""

    difference: Estimate
    statistic: float
    p_value: float
    seeds: tuple[int, ...]


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean of the finite values and its Student-t interval."""
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Estimate(mean, mean - half, mean + half, n)


def paired_test(a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE) -> PairedTest:
    """Paired comparison of two configurations' per-seed values (keys are seeds)."""
    seeds = tuple(sorted(set(a) & set(b)))
    first = np.array([a[s] for s in seeds], dtype=float)
    second = np.array([b[s] for s in seeds], dtype=float)
    difference = t_interval(first - second, confidence)
    if len(seeds) < 2 or np.ptp(first - second) < 1e-12:  # no spread: no t statistic
        return PairedTest(difference, math.nan, math.nan, seeds)
    result = stats.ttest_rel(first, second)
    return PairedTest(difference, float(result.statistic), float(result.pvalue), seeds)


def interval_columns(
    frame: pd.DataFrame, by: list[str], value: str, confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """Per group of `by`: the mean of `value` over rows (seeds), its interval and n."""
    rows = []
    for keys, group in frame.groupby(by, dropna=False, sort=True):
        estimate = t_interval(group[value], confidence)
        rows.append(
            {
                **dict(zip(by, keys)),
                value: estimate.mean,
                f"{value}_low": estimate.low,
                f"{value}_high": estimate.high,
                "seeds": estimate.n,
            }
        )
    return pd.DataFrame(rows, columns=[*by, value, f"{value}_low", f"{value}_high", "seeds"])


def seed_phrase(n: int) -> str:
    """'1 seed (no interval)' or 'mean of 3 seeds, 95% Student-t interval'."""
    if n <= 1:
        return f"{n} seed (no interval)"
    return f"mean of {n} seeds, {CONFIDENCE:.0%} Student-t interval"
