"""Statistics shared by the benchmarks (imported by the bench_*.py scripts, which run from
this folder)."""

from __future__ import annotations

import math
import statistics


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: the order statistics whose ranks
    the binomial(n, 1/2) distribution puts around the middle (no normality assumed)."""
    xs = sorted(values)
    n = len(xs)
    if n < 3:
        return (xs[0], xs[-1]) if xs else (math.nan, math.nan)
    tail = (1.0 - level) / 2.0
    cdf, k = 0.0, 0
    for i in range(n + 1):  # largest k with P(B <= k - 1) <= tail
        cdf += math.comb(n, i) / 2.0**n
        if cdf > tail:
            k = i
            break
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and its normal 95 % confidence interval (for many samples: the benchmarks that need
    a mean, where once-per-block work lands in some samples and not in others)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, math.nan, math.nan
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    return m, m - half, m + half
