"""results.report: experiment A's rates, tests, dose-response and sweep table on hand-made
judged samples, every number worked out by hand."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from test_sweep_report import scored_rows, sweep_rows

from steerpipe.results.report import (
    condition_against_control,
    condition_summary,
    dose_response,
    moved,
    plot_concluding_dose,
    plot_spread,
    prompt_differences,
    prompt_level,
    report_metrics,
)
from steerpipe.results.sweep_report import sweep_metrics
from steerpipe.stats import StatsParams, fisher_p, wilson_interval

P = StatsParams(seed=0, n_resamples=1000, samples=2)
CELL = {"layer": 5, "position": 1, "coefficient": 2.0, "scale": "absolute"}


def sample(
    condition: str, row: int, category: int | None, degenerate: bool = False
) -> dict[str, Any]:
    return {**CELL, "condition": condition, "row": row, "step": 0, "category": category} | {
        "degenerate": degenerate,
        "clean": category == 1 and not degenerate,
    }


def steer_rows() -> list[dict[str, Any]]:
    """Two prompts x 2 samples (category, degenerate). Control concludes 1/4, all clean;
    steered 3/4 (prompt 0: 2/2 against 1/2, prompt 1: 1/2 against 0/2), but 2 of them
    degenerate: clean 1/4, as control; negated 0/4; one random direction 1/4 (and one
    degenerate sample that does not conclude); a dose at 1.0 2/4, clean."""
    per = {
        "control": [(0, 1, False), (0, 2, False), (1, 3, False), (1, None, False)],
        "steered": [(0, 1, True), (0, 1, False), (1, 1, True), (1, 2, False)],
        "negated": [(0, 2, False), (0, 2, False), (1, 3, False), (1, 3, False)],
        "random_0": [(0, 1, False), (0, 3, True), (1, 3, False), (1, 3, False)],
        "dose_1.0": [(0, 1, False), (0, 2, False), (1, 1, False), (1, 3, False)],
    }
    norms = {"control": 0.0, "steered": 4.0, "negated": 4.0, "random_0": 4.0, "dose_1.0": 2.0}
    coefficients = {"dose_1.0": 1.0}
    rows = []
    for name, samples in per.items():
        for row, category, degenerate in samples:
            r = sample(name, row, category, degenerate)
            r["vector_norm"] = norms[name]
            r["coefficient"] = coefficients.get(name, 2.0)
            rows.append(r)
    return rows


def test_condition_summary_counts_categories_and_unjudged() -> None:
    rows = [sample("c", 0, c) for c in (1, 1, 2, 3, None)]
    s = condition_summary(rows)
    low, high = wilson_interval(2, 5)
    assert s == {
        "count": 2,
        "n": 5,
        "rate": 0.4,
        "ci95_low": low,
        "ci95_high": high,
        "categories": {"concluding": 2, "verifying": 1, "other": 1},
        "unjudged": 1,
    }


def test_prompt_level_is_an_exact_sign_flip_over_prompts() -> None:
    level = prompt_level(steer_rows(), "steered", P)
    assert level["prompts"] == 2
    # per-prompt differences +0.5 and +0.5: of the 4 sign flips, 2 have |mean| >= 0.5
    assert level["sign_flip_p"] == pytest.approx(0.5)
    # a bootstrap of 2 prompts draws (0, 0), (0, 1), (1, 1): rates over those only
    assert 0.0 <= level["control"]["ci95_low"] <= 0.25 <= level["control"]["ci95_high"] <= 0.5
    assert level["difference"]["ci95_low"] == pytest.approx(0.5)
    assert level["difference"]["ci95_high"] == pytest.approx(0.5)
    # both prompts moved up
    assert level["moved"] == {"up": 1.0, "same": 0.0, "down": 0.0, "prompts": 2}
    one_prompt = [r for r in steer_rows() if r["row"] == 0]
    moved_up = {"up": 1.0, "same": 0.0, "down": 0.0, "prompts": 1}
    assert prompt_level(one_prompt, "steered", P) == {"prompts": 1, "moved": moved_up}


def test_a_condition_against_control() -> None:
    rows = steer_rows()
    control = condition_summary([r for r in rows if r["condition"] == "control"])
    got = condition_against_control(rows, "steered", control, P)
    assert (got["count"], got["n"]) == (3, 4)
    assert got["difference"] == 0.5
    assert got["fisher_p"] == fisher_p(3, 4, 1, 4)
    assert got["prompt_level"] == prompt_level(rows, "steered", P)


def test_each_measure_counts_its_own_samples() -> None:
    rows = [r for r in steer_rows() if r["condition"] == "steered"]
    assert condition_summary(rows)["count"] == 3
    clean = condition_summary(rows, "clean")
    assert (clean["count"], clean["n"], clean["rate"]) == (1, 4, 0.25)
    assert "categories" not in clean  # the categories belong to the raw rate
    assert condition_summary(rows, "degenerate")["count"] == 2
    # per prompt: prompt 0 steered 1/2 clean against control 1/2, prompt 1 0/2 against 0/2
    level = prompt_level(steer_rows(), "steered", P, "clean")
    assert level["sign_flip_p"] == 1.0 and level["difference"]["ci95_high"] == 0.0
    assert prompt_level(steer_rows(), "steered", P, "degenerate")["sign_flip_p"] == 0.5


def test_dose_response_keeps_the_vectors_axis_in_order() -> None:
    dose = report_metrics(steer_rows(), sweep_rows(), scored_rows(), P)["dose_response"]
    assert list(dose) == ["negated", "control", "dose_1.0", "steered"]  # -2, 0, 1, 2
    assert [q["coefficient"] for q in dose.values()] == [-2.0, 0.0, 1.0, 2.0]
    assert "difference" not in dose["control"] and dose["steered"]["difference"] == 0.5
    assert dose["dose_1.0"]["vector_norm"] == 2.0 and dose["dose_1.0"]["rate"] == 0.5
    steered = dose["steered"]
    assert (steered["clean_rate"], steered["clean_difference"]) == (0.25, 0.0)
    assert (steered["degenerate_count"], steered["degenerate_sign_flip_p"]) == (2, 0.5)
    assert dose["control"]["clean_prompt_ci95_low"] is not None


def test_dose_points_take_their_own_interval_over_prompts() -> None:
    def summary(rate: float, level: dict[str, Any]) -> dict[str, Any]:
        s = {"count": 1, "n": 4, "rate": rate, "ci95_low": 0.0, "ci95_high": 0.9}
        one = {**s, "difference": rate - 0.25, "fisher_p": 1.0, "prompt_level": level}
        return {m: one for m in ("concluding", "clean", "degenerate")}

    rows = [{"condition": c, "vector_norm": 1.0} for c in ("control", "negated", "random_0")]
    summaries = {
        "control": summary(0.25, {"control": {"ci95_low": 0.1, "ci95_high": 0.4}}),
        "negated": summary(0.0, {"negated": {"ci95_low": 0.0, "ci95_high": 0.2}}),
        "random_0": summary(0.5, {}),  # not on the vector's axis: left out
    }
    dose = dose_response(rows, summaries, 3.0)
    assert list(dose) == ["negated", "control"]
    assert (dose["control"]["prompt_ci95_low"], dose["control"]["prompt_ci95_high"]) == (0.1, 0.4)
    assert dose["control"]["clean_prompt_ci95_high"] == 0.4
    assert dose["negated"]["coefficient"] == -3.0 and dose["negated"]["prompt_ci95_high"] == 0.2
    assert dose["negated"]["difference"] == -0.25 and dose["negated"]["sign_flip_p"] is None


def test_report_metrics_heads_with_the_clean_rate_and_picks_each_metrics_best() -> None:
    metrics = report_metrics(steer_rows(), sweep_rows(), scored_rows(), P)
    assert metrics["cell"] == {"layer": 5, "position": 1, "coefficient": 2.0}
    assert set(metrics["controls"]) == {"negated", "random_0"}
    assert metrics["controls"]["random_0"]["count"] == 1
    assert metrics["controls"]["random_0"]["degenerate"]["count"] == 1
    assert (metrics["control"]["rate"], metrics["steered"]["rate"]) == (0.25, 0.75)
    assert metrics["difference"] == 0.5 and "difference" not in metrics["steered"]
    clean = metrics["clean"]
    assert (clean["control"]["rate"], clean["steered"]["rate"], clean["difference"]) == (
        0.25,
        0.25,
        0.0,
    )
    assert clean["prompt_level"]["sign_flip_p"] == 1.0
    assert metrics["degenerate"]["steered"]["count"] == 2
    assert metrics["sweep"] == sweep_metrics(sweep_rows(), scored_rows())


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_the_plots_write_their_tables(tmp_path: Path) -> None:
    metrics = report_metrics(steer_rows(), sweep_rows(), scored_rows(), P)
    plot_concluding_dose(
        metrics["dose_response"], "absolute", 5, tmp_path / "dose.csv", tmp_path / "dose.png"
    )
    dose = read_csv(tmp_path / "dose.csv")
    assert dose[0][:4] == ["coefficient", "concluding_rate", "clean_rate", "degenerate_rate"]
    assert [(r[0], r[1], r[2], r[3], r[-1]) for r in dose[1:]] == [
        ("-2.0", "0.0", "0.0", "0.0", "negated"),
        ("0.0", "0.25", "0.25", "0.0", "control"),
        ("1.0", "0.5", "0.5", "0.0", "dose_1.0"),
        ("2.0", "0.75", "0.25", "0.5", "steered"),
    ]
    assert (tmp_path / "dose.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


KL = {"control": 0.0, "steered": 0.8, "negated": 0.5, "random_0": 0.4, "dose_1.0": 0.3}


def with_baselines() -> list[dict[str, Any]]:
    """``steer_rows`` with each vector's KL, and the two baselines (no vector, no KL):
    instruction concludes 3/4, all clean (prompt 0: 1/2, prompt 1: 2/2); prefill 4/4, one
    of prompt 0's degenerate (clean 3/4)."""
    rows = [r | {"kl": KL[r["condition"]]} for r in steer_rows()]
    per = {
        "instruction": [(0, 1, False), (0, 3, False), (1, 1, False), (1, 1, False)],
        "prefill": [(0, 1, False), (0, 1, True), (1, 1, False), (1, 1, False)],
    }
    for name, samples in per.items():
        for row, category, degenerate in samples:
            base = sample(name, row, category, degenerate)
            rows.append(base | {"coefficient": 0.0, "vector_norm": 0.0, "kl": None})
    return rows


def test_steered_is_paired_with_each_baseline_by_prompt() -> None:
    metrics = report_metrics(with_baselines(), sweep_rows(), scored_rows(), P)
    assert set(metrics["controls"]) == {"negated", "random_0"}  # the baselines apart
    assert set(metrics["baselines"]) == {"instruction", "prefill"}
    instruction = metrics["baselines"]["instruction"]
    # against control, as every condition: 3/4 against 1/4
    assert (instruction["rate"], instruction["difference"]) == (0.75, 0.5)
    assert instruction["clean"]["count"] == 3
    # steered against it, clean: prompt 0 1/2 against 1/2, prompt 1 0/2 against 2/2
    against = instruction["steered_against"]["clean"]
    assert against["difference"] == 0.25 - 0.75
    assert against["fisher_p"] == fisher_p(1, 4, 3, 4)
    level = against["prompt_level"]
    assert level["moved"] == {"up": 0.0, "same": 0.5, "down": 0.5, "prompts": 2}
    assert level["sign_flip_p"] == 1.0  # differences 0 and -1: every flip's |mean| is 0.5
    assert (level["difference"]["ci95_low"], level["difference"]["ci95_high"]) == (-1.0, 0.0)
    # the raw rate: steered 3/4 against instruction's 3/4, and prefill's 4/4 by construction
    assert instruction["steered_against"]["concluding"]["difference"] == 0.0
    prefill = metrics["baselines"]["prefill"]
    assert (prefill["rate"], prefill["clean"]["rate"], prefill["degenerate"]["count"]) == (
        1.0,
        0.75,
        1,
    )
    assert prefill["steered_against"]["concluding"]["difference"] == -0.25


def test_kl_is_reported_per_vector_and_on_the_dose_axis(tmp_path: Path) -> None:
    metrics = report_metrics(with_baselines(), sweep_rows(), scored_rows(), P)
    assert metrics["kl"] == KL  # the baselines add no vector: no KL
    dose = metrics["dose_response"]
    assert [q["kl"] for q in dose.values()] == [0.5, 0.0, 0.3, 0.8]  # -2, 0, 1, 2
    plot_concluding_dose(dose, "absolute", 5, tmp_path / "dose.csv", tmp_path / "dose.png")
    table = read_csv(tmp_path / "dose.csv")
    assert table[0][4] == "kl" and [r[4] for r in table[1:]] == ["0.5", "0.0", "0.3", "0.8"]


def test_moved_counts_prompts_up_unchanged_and_down() -> None:
    assert moved([0.5, 0.0, -0.25, 1.0]) == {"up": 0.5, "same": 0.25, "down": 0.25, "prompts": 4}


def test_the_spread_plot_writes_each_prompts_difference(tmp_path: Path) -> None:
    rows = with_baselines()
    plot_spread(rows, "clean", tmp_path / "spread.csv", tmp_path / "spread.png")
    table = read_csv(tmp_path / "spread.csv")
    assert table[0] == ["condition", "row", "step", "difference"]
    got = {(r[0], int(r[1])): float(r[3]) for r in table[1:]}
    names = ("dose_1.0", "instruction", "negated", "prefill", "random_0", "steered")
    assert {n for n, _ in got} == set(names)  # every condition but control, both prompts
    assert len(got) == 12
    # control is clean 1/2 on prompt 0 and 0/2 on prompt 1
    assert (got[("instruction", 0)], got[("instruction", 1)]) == (0.0, 1.0)
    assert (got[("prefill", 0)], got[("negated", 0)], got[("steered", 1)]) == (0.0, -0.5, 0.0)
    assert got[("dose_1.0", 1)] == prompt_differences(rows, "dose_1.0", "clean")[(1, 0)] == 0.5
    assert (tmp_path / "spread.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
