"""Proportions with 95% Wilson intervals and a two-sided Fisher exact test."""

from __future__ import annotations

import math

from scipy.stats import fisher_exact


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for successes / n; (0, 1) when n is 0."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def fisher_p(a_success: int, a_n: int, b_success: int, b_n: int) -> float:
    """Two-sided Fisher exact p-value for the 2x2 table of two proportions."""
    table = [[a_success, a_n - a_success], [b_success, b_n - b_success]]
    return float(fisher_exact(table, alternative="two-sided").pvalue)


def rate_summary(successes: int, n: int) -> dict[str, float | int]:
    lo, hi = wilson_interval(successes, n)
    return {
        "count": successes,
        "n": n,
        "rate": successes / n if n else 0.0,
        "ci95_low": lo,
        "ci95_high": hi,
    }
