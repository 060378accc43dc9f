"""Proportions with 95% intervals and tests, per sample and per prompt.

Per sample (the original's analysis): Wilson intervals and a two-sided Fisher exact test, as if
every sample were independent. Per prompt: the samples of one prompt are correlated, so
``cluster_ci`` resamples whole prompts (a seeded percentile bootstrap, ``scipy.stats.bootstrap``)
and ``sign_flip_p`` tests the per-prompt differences between two conditions on the same prompts
(``scipy.stats.permutation_test``: exact, all 2^n sign flips, up to ``n_resamples``).
Paired answers (the same questions with and without a hook) get ``mcnemar_p``; two judges of
the same samples, ``cohen_kappa``. ``two_proportion_n`` says how many samples a rate needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.stats import binomtest, bootstrap, fisher_exact, permutation_test

from steerpipe.config import check


@dataclass(frozen=True)
class StatsParams:
    """params.yaml ``stats``: the resampling behind the per-prompt and paired intervals."""

    SECTION: ClassVar[str] = "stats"
    seed: int  # of the bootstraps and, above n_resamples sign flips, of the permutation test
    n_resamples: int
    samples: int  # prompts (problems) drawn, with seed, into each report's samples file

    def __post_init__(self) -> None:
        check(self.n_resamples >= 100, "stats.n_resamples", "at least 100")
        check(self.samples >= 0, "stats.samples", "at least 0")


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


def cluster_ci(
    statistic: Callable[..., np.ndarray],
    columns: Sequence[Sequence[float]],
    *,
    seed: int,
    n_resamples: int,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``statistic(*columns, axis)``, resampling the
    clusters (one entry per column each): the prompts, with their counts per condition."""
    data = tuple(np.asarray(c, dtype=float) for c in columns)
    if len(data[0]) < 2:
        raise ValueError(f"a bootstrap over clusters needs at least 2, got {len(data[0])}")
    result = bootstrap(
        data,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return (float(ci.low), float(ci.high))


def mean_statistic(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """The mean, as a statistic for ``cluster_ci`` (an interval of a mean over clusters)."""
    return np.mean(x, axis=axis)


def pooled_rate(successes: np.ndarray, totals: np.ndarray, axis: int = -1) -> np.ndarray:
    """successes / totals summed over the clusters."""
    return np.sum(successes, axis=axis) / np.sum(totals, axis=axis)


def pooled_difference(
    a: np.ndarray, a_n: np.ndarray, b: np.ndarray, b_n: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Rate of a minus rate of b, over the same clusters."""
    return pooled_rate(a, a_n, axis) - pooled_rate(b, b_n, axis)


def sign_flip_p(differences: Sequence[float], *, seed: int, n_resamples: int) -> float:
    """Two-sided p-value that the mean per-cluster difference is 0: the differences' signs
    flipped independently (exact when 2^n <= n_resamples)."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0:
        raise ValueError("a sign-flip test needs at least one difference")
    result = permutation_test(
        (d,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def two_proportion_n(p1: float, p2: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Samples per group that detect rates ``p1`` against ``p2`` with a two-sided test at
    ``alpha`` with ``power``: the normal approximation without continuity correction (Fleiss),
    the variance under the null from the pooled rate and under the alternative from each. A
    paired design (McNemar) needs fewer, by how often the pairs agree; round up."""
    from scipy.stats import norm

    if not (0 < p1 < 1 and 0 < p2 < 1) or p1 == p2:
        raise ValueError(f"rates must differ and lie in (0, 1), got {p1} and {p2}")
    pooled = (p1 + p2) / 2
    null = math.sqrt(2 * pooled * (1 - pooled))
    alternative = math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    z = float(norm.ppf(1 - alpha / 2)) * null + float(norm.ppf(power)) * alternative
    return z**2 / (p1 - p2) ** 2


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pairs: items right under a only,
    and under b only (a binomial test of one count against their sum at 1/2)."""
    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Cohen's kappa of two raters' labels of the same items: their agreement beyond what
    their label frequencies give by chance, (p_o - p_e) / (1 - p_e); nan when p_e is 1."""
    n = len(a)
    if n == 0 or n != len(b):
        raise ValueError(f"kappa needs two label lists of one length, got {n} and {len(b)}")
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    expected = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in set(a) | set(b))
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float | int | None]:
    """Spearman's rank correlation of paired values with its two-sided p-value (scipy's);
    both null where it is undefined (fewer than 3 pairs, or one side constant)."""
    from scipy.stats import spearmanr

    n = len(x)
    if n != len(y):
        raise ValueError(f"rank correlation needs pairs, got {n} and {len(y)} values")
    if n < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"spearman": None, "p": None, "n": n}
    result = spearmanr(x, y)
    return {"spearman": float(result.statistic), "p": float(result.pvalue), "n": n}
