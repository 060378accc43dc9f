"""neurons: sparse feature rows, the masks, and the matched control."""

from __future__ import annotations

import pytest
import torch

from steerpipe.transcoders.neurons import SparseRows, matched_features, neuron_masks


def test_sparse_rows_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = (torch.relu(torch.randn(n, 9, generator=g) - 0.5) for n in (4, 3))
    rows = SparseRows.cat([SparseRows.from_dense(a), SparseRows.from_dense(b)], 9)
    assert rows.n_rows == 7 and len(rows.values) == int((torch.cat([a, b]) != 0).sum())
    assert torch.equal(rows.to_dense(), torch.cat([a, b]))
    assert torch.allclose(rows.column_mean(), torch.cat([a, b]).mean(0))
    back = SparseRows.from_tensors(rows.tensors("basic"), "basic", 9)
    assert torch.equal(back.to_dense(), rows.to_dense())
    assert SparseRows.cat([], 9).to_dense().shape == (0, 9)


def test_log_frequency_of_trace_rows() -> None:
    """The alive mask's fallback for formats without firing frequencies: the share of rows in
    which a feature is nonzero, in log10, -10 where it never fires."""
    dense = torch.tensor([[1.0, 0, 0, 0], [2.0, 3.0, 0, 0], [0.5, 0, 0, -1.0], [1.0, 0, 0, 0]])
    freq = SparseRows.from_dense(dense).log_frequency()
    want = torch.tensor([0.0, torch.tensor(0.25).log10(), -10.0, torch.tensor(0.25).log10()])
    torch.testing.assert_close(freq, want)


def test_neuron_masks() -> None:
    log_frequency = torch.tensor([-7.0, -5.0, -5.0, -5.0, -2.0])
    means = {
        "basic": torch.tensor([0.0, 0.1, 0.1, 0.1, 0.1]),
        "0shot": torch.tensor([1.0, 0.1 + 2e-3, 0.1, 0.1, 0.1005]),
        "fewshot": torch.tensor([1.0, 0.1, 0.1 + 2e-3, 0.0, 0.1]),
    }
    masks = neuron_masks(
        log_frequency, means, baseline="basic", alive_log10_frequency=-6, reasoning_threshold=1e-3
    )
    assert masks["alive"].tolist() == [False, True, True, True, True]
    assert masks["reasoning"].tolist() == [False, True, True, False, False]  # feature 0 is dead
    assert masks["memory"].tolist() == [False, False, False, True, True]


def test_matched_features_match_count_and_total_mean_within_the_tolerance() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.rand(400, generator=g)
    target = torch.arange(0, 40)  # 40 features; the pool is the other 360
    means[target] += 0.3  # the target is more active than a random draw from the pool
    pool = torch.arange(40, 400)
    chosen, report = matched_features(
        means, target, pool, generator=torch.Generator().manual_seed(5), tolerance=0.01
    )
    assert len(chosen) == 40 and len(set(chosen.tolist())) == 40
    assert set(chosen.tolist()) <= set(pool.tolist())
    want, got = float(means[target].double().sum()), float(means[chosen].double().sum())
    assert report["target_total_mean"] == pytest.approx(want)
    assert report["matched_total_mean"] == pytest.approx(got)
    assert abs(got - want) <= 0.01 * want and report["within_tolerance"]
    assert report["relative_gap"] == pytest.approx((got - want) / want)
    # it starts from the unmatched random draw of the same seed, and only the swaps move it
    draw = pool[torch.randperm(360, generator=torch.Generator().manual_seed(5))[:40]]
    assert report["unmatched_total_mean"] == pytest.approx(float(means[draw].double().sum()))
    assert report["swaps"] > 0
    assert len(set(chosen.tolist()) - set(draw.tolist())) <= report["swaps"]
    # seeded
    again, _ = matched_features(
        means, target, pool, generator=torch.Generator().manual_seed(5), tolerance=0.01
    )
    assert torch.equal(chosen, again)


def test_matched_features_without_a_gap_is_the_random_draw() -> None:
    means = torch.arange(10, dtype=torch.float32)
    pool = torch.arange(3, 10)
    chosen, report = matched_features(
        means,
        torch.tensor([0, 1]),
        pool,
        generator=torch.Generator().manual_seed(2),
        tolerance=float("inf"),
    )
    draw = pool[torch.randperm(7, generator=torch.Generator().manual_seed(2))[:2]]
    assert chosen.tolist() == sorted(draw.tolist()) and report["swaps"] == 0


def test_matched_features_report_the_best_they_reach_when_the_pool_cannot_match() -> None:
    # target total 20 (two features of 10); the pool's two largest give 1 + 2 = 3 at most
    means = torch.tensor([10.0, 10.0, 0.0, 1.0, 2.0, 0.5])
    chosen, report = matched_features(
        means,
        torch.tensor([0, 1]),
        torch.arange(2, 6),
        generator=torch.Generator().manual_seed(0),
        tolerance=0.05,
    )
    assert chosen.tolist() == [3, 4]  # the closest the pool allows
    assert report["within_tolerance"] is False
    assert report["matched_total_mean"] == 3.0 and report["target_total_mean"] == 20.0
    assert report["relative_gap"] == pytest.approx(-0.85)
