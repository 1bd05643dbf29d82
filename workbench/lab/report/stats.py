"""Seed statistics for reports: Student-t intervals of a mean, paired t-tests across seeds, and
what a paired comparison could have detected (its power, statsmodels' TTestPower).

Pure functions of plain numbers (numpy, scipy.stats and statsmodels), so each can be checked by
hand.
Seeds are the replicates: a configuration's value is estimated by the mean over its seeds, and
two configurations are compared on the seeds both ran (same seed, same data split and init).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench.core.lazy import lazy

if TYPE_CHECKING:
    from scipy import stats
    from statsmodels.stats import power
else:
    stats = lazy("scipy.stats")  # a second per process: the point notebooks' figures never need it
    power = lazy("statsmodels.stats.power")  # only the report's verdict asks what seeds could detect

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
POWER = 0.8  # the chance of resolving a true difference that the detectable difference names
DETECTABLE = (
    f"the smallest true difference that the paired t-test over these seeds resolves with "
    f"{POWER:.0%} power at the {1 - CONFIDENCE:g} level (two-sided), given the standard deviation "
    "of the per-seed differences (statsmodels.stats.power.TTestPower); and, for a difference "
    "within the noise, the seeds the same test would need to resolve the observed one"
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
    spread: float = math.nan  # standard deviation of the per-seed differences (NaN below 2 seeds)


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
        return PairedTest(difference, math.nan, math.nan, seeds, 0.0 if len(seeds) >= 2 else math.nan)
    result = stats.ttest_rel(first, second)
    spread = float(np.std(first - second, ddof=1))
    return PairedTest(difference, float(result.statistic), float(result.pvalue), seeds, spread)


@dataclass(frozen=True)
class Detectable:
    """What a paired comparison could resolve: the smallest true difference at `POWER` with its
    seeds and spread, and the seeds that would resolve the observed difference (NaN where no
    spread or no difference allows an answer)."""

    difference: float
    seeds_needed: float


def detectable(test: PairedTest, confidence: float = CONFIDENCE, power_: float = POWER) -> Detectable:
    """The smallest difference the paired t-test over `test`'s seeds resolves with `power_` (its
    effect size from statsmodels' TTestPower times the per-seed differences' standard deviation),
    and how many seeds would resolve the observed mean difference with the same power."""
    n, spread, gap = len(test.seeds), test.spread, abs(test.difference.mean)
    if n < 2 or not math.isfinite(spread) or spread <= 0:
        return Detectable(math.nan, math.nan)
    solver, alpha = power.TTestPower(), 1 - confidence
    effect = float(solver.solve_power(effect_size=None, nobs=n, alpha=alpha, power=power_))
    needed = seeds_for(gap / spread, alpha, power_) if gap > 0 else math.nan
    return Detectable(effect * spread, needed)


MOST_SEEDS = 10_000  # beyond this many seeds the answer is "more" (NaN)


def seeds_for(effect: float, alpha: float, power_: float) -> float:
    """The fewest seeds (at least 2) whose paired t-test reaches `power_` for this effect size
    (mean ÷ standard deviation of the differences): statsmodels' power at doubling seed counts,
    then halving between the last two (power rises with the count); NaN beyond `MOST_SEEDS`."""
    solver = power.TTestPower()
    reaches = lambda seeds: solver.power(effect_size=effect, nobs=seeds, alpha=alpha) >= power_
    low, high = 1, 2
    while not reaches(high):
        if high >= MOST_SEEDS:
            return math.nan
        low, high = high, min(2 * high, MOST_SEEDS)
    while high - low > 1:  # reaches(high) holds, reaches(low) does not (or low is 1)
        middle = (low + high) // 2
        low, high = (low, middle) if reaches(middle) else (middle, high)
    return high


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
