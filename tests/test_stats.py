"""stats: Wilson intervals and Fisher's exact test against textbook values; the per-prompt
bootstrap and sign-flip test against scipy and a hand enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from steerpipe.stats import (
    cluster_ci,
    cohen_kappa,
    fisher_p,
    mcnemar_p,
    pooled_difference,
    pooled_rate,
    rate_summary,
    sign_flip_p,
    two_proportion_n,
    wilson_interval,
)


def test_wilson_known_values() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_contains_the_rate() -> None:
    for k, n in [(22, 250), (84, 250), (1, 3)]:
        lo, hi = wilson_interval(k, n)
        assert lo < k / n < hi


def test_fisher_known_values() -> None:
    assert fisher_p(3, 4, 1, 4) == pytest.approx(0.4857, abs=1e-4)  # the lady tasting tea
    assert fisher_p(5, 10, 5, 10) == pytest.approx(1.0)
    assert fisher_p(84, 250, 22, 250) < 1e-9  # the original notebook's result


def test_rate_summary() -> None:
    s = rate_summary(22, 250)
    assert s["rate"] == pytest.approx(0.088)
    assert s["count"] == 22 and s["n"] == 250


def test_sign_flip_p_enumerates_every_flip_of_four_prompts() -> None:
    d = [1.0, 0.5, 0.25, -0.25]
    observed = abs(sum(d))
    flips = list(itertools.product([1, -1], repeat=4))
    by_hand = sum(
        abs(sum(s * x for s, x in zip(f, d, strict=True))) >= observed - 1e-12 for f in flips
    )
    # with 1 and 0.5 of one sign, three of the four signs of (0.25, -0.25) reach 1.5: 6 of 16
    assert len(flips) == 16 and by_hand == 6
    assert sign_flip_p(d, seed=0, n_resamples=10_000) == pytest.approx(by_hand / 16)
    assert sign_flip_p([0.5] * 3, seed=0, n_resamples=10_000) == pytest.approx(2 / 8)


def test_cluster_ci_is_seeded_and_matches_scipy() -> None:
    hits = [4, 3, 0, 1, 4, 2, 0, 4]
    totals = [4] * 8
    lo, hi = cluster_ci(pooled_rate, (hits, totals), seed=3, n_resamples=2000)
    assert (lo, hi) == cluster_ci(pooled_rate, (hits, totals), seed=3, n_resamples=2000)
    want = scipy.stats.bootstrap(
        (np.array(hits, float), np.array(totals, float)),
        lambda h, n, axis: h.sum(axis) / n.sum(axis),
        paired=True,
        vectorized=True,
        n_resamples=2000,
        method="percentile",
        rng=np.random.default_rng(3),
    ).confidence_interval
    assert (lo, hi) == (want.low, want.high)
    assert lo < sum(hits) / sum(totals) < hi
    # prompts that all agree leave no spread; one prompt gives no interval
    assert cluster_ci(pooled_rate, ([2, 2, 2], [4, 4, 4]), seed=0, n_resamples=100) == (0.5, 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        cluster_ci(pooled_rate, ([1], [4]), seed=0, n_resamples=100)


def test_pooled_difference_of_the_same_prompts() -> None:
    a, b, n = np.array([4.0, 2.0]), np.array([1.0, 1.0]), np.array([4.0, 4.0])
    assert pooled_difference(a, n, b, n) == pytest.approx(6 / 8 - 2 / 8)


def test_mcnemar_exact_small_cases_by_hand() -> None:
    assert mcnemar_p(0, 5) == pytest.approx(2 * 0.5**5)  # 0.0625
    assert mcnemar_p(4, 1) == pytest.approx(2 * (1 + 5) / 32)  # P(X <= 1) twice: 0.375
    assert mcnemar_p(3, 3) == pytest.approx(1.0)
    assert mcnemar_p(0, 0) == 1.0  # no discordant pair: no evidence either way


def test_cohen_kappa_textbook_table() -> None:
    # 50 items: both say yes 20, A yes B no 5, A no B yes 10, both no 15 (p_o 0.7, p_e 0.5)
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 2, 3, 1], [1, 2, 3, 1]) == 1.0
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))  # one label only: chance agreement is 1
    with pytest.raises(ValueError, match="one length"):
        cohen_kappa([1], [1, 2])


def test_rank_correlation_is_scipys_spearman_and_null_when_undefined() -> None:
    from scipy.stats import spearmanr

    from steerpipe.stats import rank_correlation

    x, y = [0.0, 0.25, 0.5, 1.0, 0.25], [-0.3, 0.1, 0.0, 0.9, 0.2]
    want = spearmanr(x, y)
    got = rank_correlation(x, y)
    assert got == {
        "spearman": pytest.approx(want.statistic),
        "p": pytest.approx(want.pvalue),
        "n": 5,
    }
    # ranks 1..4 against 4..1: exactly -1
    assert rank_correlation([1, 2, 3, 4], [8, 6, 4, 2])["spearman"] == pytest.approx(-1.0)
    assert rank_correlation([0.5] * 4, [1, 2, 3, 4]) == {"spearman": None, "p": None, "n": 4}
    assert rank_correlation([1, 2], [2, 1])["spearman"] is None


def test_two_proportion_n_matches_statsmodels() -> None:
    # statsmodels 0.15.0 (installed apart, --no-deps), statsmodels/stats/proportion.py:
    # samplesize_proportions_2indep_onetail(0.15, 0.5, 0.8, alternative="two-sided") and
    # (-0.15, 0.33, 0.8, ...), the same normal approximation
    assert two_proportion_n(0.65, 0.5) == pytest.approx(169.31137141966903, rel=1e-9)
    assert two_proportion_n(0.18, 0.33) == pytest.approx(131.35628167029626, rel=1e-9)
    # by hand: (1.95996 sqrt(2 x 0.575 x 0.425) + 0.84162 sqrt(0.65 x 0.35 + 0.25))^2 / 0.15^2
    assert two_proportion_n(0.5, 0.65) == pytest.approx(169.31, abs=0.01)
    assert two_proportion_n(0.5, 0.65, power=0.9) > two_proportion_n(0.5, 0.65)
    with pytest.raises(ValueError, match="must differ"):
        two_proportion_n(0.4, 0.4)
