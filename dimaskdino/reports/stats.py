"""Seed statistics of the report: mean, standard deviation and the 95% Student-t interval
of the mean (``scipy.stats.t``), and the verdict rule of the claims table."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

LEVEL = 0.95


def t_interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """``(mean, std, low, high)`` of ``values`` (std with ddof=1; the 95% t-interval of the
    mean, ``mean ± t(0.975, n-1) std / sqrt(n)``); std and interval are NaN for fewer than
    two values."""
    n = len(values)
    if n == 0:
        return (math.nan,) * 4
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half
