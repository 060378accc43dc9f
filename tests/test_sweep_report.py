"""results.sweep_report: the sweep's best choices, table and heat maps on hand-made judged
samples, every number worked out by hand."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest

from steerpipe.config import StageError
from steerpipe.results.sweep_report import plot_sweep, sweep_metrics, sweep_table


def sweep_rows() -> list[dict[str, Any]]:
    """At coefficient 1: choice (3, 0) 1 of 2 concluding; (3, 1) 2 of 2, one degenerate;
    (6, 0) 0 of 2. At coefficient 2: (3, 1) 2 of 2, both degenerate."""
    cells = {
        (3, 0, 1.0): [(1, False), (2, False)],
        (3, 1, 1.0): [(1, False), (1, True)],
        (6, 0, 1.0): [(3, False), (2, False)],
        (3, 1, 2.0): [(1, True), (1, True)],
    }
    return [
        {"layer": lay, "position": pos, "coefficient": c, "category": cat}
        | {"degenerate": d, "clean": cat == 1 and not d}
        for (lay, pos, c), samples in cells.items()
        for cat, d in samples
    ]


def scored_rows() -> list[dict[str, Any]]:
    scores = {(3, 0): 0.5, (3, 1): -0.25, (6, 0): 1.5, (6, 1): 0.0}
    return [
        {"layer": lay, "position": pos, "coefficient": 1.0, "score": s}
        for (lay, pos), s in scores.items()
    ]


def test_sweep_metrics_pick_each_metrics_best_choice() -> None:
    sweep = sweep_metrics(sweep_rows(), scored_rows())
    assert (sweep["choices"], sweep["samples"]) == (4, 8)
    assert sweep["best_judged"] == {"layer": 3, "position": 1, "coefficient": 1.0, "rate": 1.0}
    assert sweep["best_clean"] == {"layer": 3, "position": 0, "coefficient": 1.0, "rate": 0.5}
    assert sweep["best_logprob"] == {"layer": 6, "position": 0, "score": 1.5}
    # logprob_clean: the best-scoring cell (6, 0); its coefficient by the clean rate pooled over
    # the 3 best-scoring cells (6, 0), (3, 0), (6, 1): at 1.0, 0 of 2 + 1 of 2 + none clean
    assert sweep["best_logprob_clean"] == {"layer": 6, "position": 0, "coefficient": 1.0} | {
        "pooled_rate": 0.25,
        "pooled_samples": 4,
    }
    one = sweep_metrics(sweep_rows(), scored_rows(), coefficient_cells=1)["best_logprob_clean"]
    assert (one["pooled_rate"], one["pooled_samples"]) == (0.0, 2)
    with pytest.raises(StageError, match="samples at the best-scoring cells"):  # (6, 1): none
        sweep_metrics(sweep_rows(), scored_rows()[3:], coefficient_cells=1)
    # the 3 cells both metrics have at the logprob coefficient: raw rates (0.5, 1, 0) against
    # scores (0.5, -0.25, 1.5)
    assert sweep["rank_correlation"]["spearman"] == pytest.approx(-1.0)
    assert "kl" not in sweep["best_clean"]
    # given each choice's KL, each best choice shows its own
    kl = [{"layer": 3, "position": 0, "coefficient": 1.0, "kl": 0.25}]
    kl += [{"layer": 6, "position": 0, "coefficient": 1.0, "kl": 0.5}]
    with_kl = sweep_metrics(sweep_rows(), scored_rows(), kl=kl)
    assert (with_kl["best_clean"]["kl"], with_kl["best_logprob_clean"]["kl"]) == (0.25, 0.5)
    assert with_kl["best_judged"]["kl"] is None  # (3, 1, 1.0): not given


def test_sweep_table_marks_what_a_metric_lacks() -> None:
    header, rows = sweep_table(sweep_rows(), scored_rows())
    assert header == [
        "layer",
        "position",
        "coefficient",
        "concluding_rate",
        "clean_rate",
        "degenerate_rate",
        "n",
        "logprob_score",
        "kl",
    ]
    nan = rows[2][-2]
    assert rows[:3] == [
        [3, 0, 1.0, 0.5, 0.5, 0.0, 2, 0.5, nan],
        [3, 1, 1.0, 1.0, 0.5, 0.5, 2, -0.25, nan],
        [3, 1, 2.0, 1.0, 0.0, 1.0, 2, nan, nan],
    ]
    assert math.isnan(nan)  # sampled, not scored; and no KL given
    lay, pos, c, rate, clean, degenerate, n, score, kl = rows[4]  # (6, 1): scored, never sampled
    assert (lay, pos, c, n, score) == (6, 1, 1.0, 0, 0.0) and math.isnan(rate)
    # with each choice's KL on neutral text
    kl_rows = [{"layer": 3, "position": 1, "coefficient": 2.0, "kl": 0.75}]
    _, rows = sweep_table(sweep_rows(), scored_rows(), kl_rows)
    assert rows[2][-1] == 0.75 and math.isnan(rows[1][-1])


def test_plot_sweep_writes_its_table(tmp_path: Path) -> None:
    metrics = {"sweep": sweep_metrics(sweep_rows(), scored_rows())}
    metrics["clean"] = {"control": {"rate": 0.25}}
    plot_sweep(sweep_rows(), scored_rows(), metrics, tmp_path / "sweep.csv", tmp_path / "s.png")
    with open(tmp_path / "sweep.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0][:3] == ["layer", "position", "coefficient"]
    assert table[2] == ["3", "1", "1.0", "1.0", "0.5", "0.5", "2", "-0.25", "nan"]
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
