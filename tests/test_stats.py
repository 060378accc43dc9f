"""stats: Wilson intervals and Fisher's exact test against textbook values."""

from __future__ import annotations

import pytest

from steerpipe.stats import fisher_p, rate_summary, wilson_interval


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
