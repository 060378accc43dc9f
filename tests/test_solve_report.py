"""results.solve_report: full solutions' accuracy and length, paired with control, on
hand-made scored solutions, every number worked out by hand."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from steerpipe.results.solve_report import (
    accuracy_power,
    plot_solution_dose,
    solutions_against_control,
    solutions_summary,
    solve_metrics,
)
from steerpipe.stats import StatsParams, mcnemar_p, wilson_interval

P = StatsParams(seed=0, n_resamples=1000, samples=2)


def solution(condition: str, problem: int, sample: int, correct: bool, tokens: int, **kw: Any):
    base = {
        "condition": condition,
        "coefficient": 0.0 if condition == "control" else 0.5,
        "vector_norm": 0.0 if condition == "control" else 3.0,
        "problem": problem,
        "sample": sample,
        "correct": correct,
        "n_tokens": tokens,
        "answer": "4",
        "finished": True,
        "conclusion_tokens": None,
        "verification_steps": 0,
        "degenerate": False,
    }
    return base | kw


def rows() -> list[dict[str, Any]]:
    """Control right on (0, 0) and (1, 1); the dose right on (0, 0) and (0, 1): one discordant
    pair each way. Control writes 100 tokens a solution; the dose 40 on problem 0, 60 on 1."""
    right = {
        "control": [True, False, False, True],
        "dose_0.5": [True, True, False, False],
    }
    tokens = {"control": [100, 100, 100, 100], "dose_0.5": [40, 40, 60, 60]}
    out = []
    for name in right:
        for k, (problem, s) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            extra = {"conclusion_tokens": 10 * (k + 1)} if name != "control" and k < 2 else {}
            out.append(solution(name, problem, s, right[name][k], tokens[name][k], **extra))
    out[1]["answer"] = None  # a wrong solution with no answer read
    out[2]["finished"] = False
    out[2]["degenerate"] = out[3]["degenerate"] = True  # one looped to the limit, one did not
    return out


def test_a_conditions_summary() -> None:
    control = [r for r in rows() if r["condition"] == "control"]
    s = solutions_summary(control, P)
    assert s["accuracy"]["count"] == 2 and s["accuracy"]["n"] == 4
    assert (s["accuracy"]["ci95_low"], s["accuracy"]["ci95_high"]) == wilson_interval(2, 4)
    assert (s["unparsable"], s["finished"], s["mean_tokens"]) == (1, 3, 100.0)
    assert (s["degenerate"], s["degenerate_to_limit"]) == (2, 1)
    assert (s["with_conclusion"], s["mean_tokens_to_conclusion"]) == (0, None)
    assert s["tokens_ci95_low"] == s["tokens_ci95_high"] == 100.0  # every problem: 100
    dose = solutions_summary([r for r in rows() if r["condition"] != "control"], P)
    assert (dose["with_conclusion"], dose["mean_tokens_to_conclusion"]) == (2, 15.0)
    assert (dose["coefficient"], dose["vector_norm"]) == (0.5, 3.0)
    one_problem = solutions_summary(control[:2], P)
    assert (
        "tokens_ci95_low" not in one_problem and "problem_ci95_low" not in one_problem["accuracy"]
    )


def test_against_control_pairs_problem_and_sample() -> None:
    all_rows = rows()
    control = [r for r in all_rows if r["condition"] == "control"]
    dose = [r for r in all_rows if r["condition"] != "control"]
    got = solutions_against_control(dose, control, P)
    assert got["right_under_control_only"] == got["right_under_condition_only"] == 1
    assert got["mcnemar_p"] == mcnemar_p(1, 1) == 1.0
    assert got["accuracy_difference"] == 0.0
    # per problem: 40 - 100 and 60 - 100
    assert got["tokens_difference"] == -50.0
    assert got["tokens_ci95_low"] == pytest.approx(-60.0)
    assert got["tokens_ci95_high"] == pytest.approx(-40.0)
    # both problems' differences are negative: of 4 sign flips, 2 are as far from 0
    assert got["tokens_sign_flip_p"] == pytest.approx(0.5)
    # problem 0: +0.5, problem 1: -0.5
    assert got["accuracy_sign_flip_p"] == pytest.approx(1.0)


def test_solve_metrics_compares_all_but_control(tmp_path: Path) -> None:
    conditions = solve_metrics(rows(), P)
    assert set(conditions) == {"control", "dose_0.5"}
    assert "against_control" not in conditions["control"]
    assert conditions["dose_0.5"]["against_control"]["tokens_difference"] == -50.0
    plot_solution_dose(conditions, tmp_path / "dose.csv", tmp_path / "dose.png")
    with open(tmp_path / "dose.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == [
        "coefficient",
        "accuracy",
        "accuracy_ci95_low",
        "accuracy_ci95_high",
        "mean_tokens",
        "tokens_ci95_low",
        "tokens_ci95_high",
        "n",
    ]
    assert [(r[0], r[1], r[4], r[7]) for r in table[1:]] == [
        ("0.0", "0.5", "100.0", "4"),
        ("0.5", "0.5", "50.0", "4"),
    ]
    assert (tmp_path / "dose.png").read_bytes()[:4] == b"\x89PNG"


def test_accuracy_power_against_the_known_case() -> None:
    # stats.two_proportion_n (checked against statsmodels in tests/test_stats.py) gives
    # 120.5 solutions for 0.30 vs 0.15 and 162.3 for 0.30 vs 0.45; they round up
    power = accuracy_power(0.30, 160)
    assert power["n_needed_down"] == 121 and power["n_needed_up"] == 163
    assert power["detects_both"] is False  # 160 < 163
    assert accuracy_power(0.30, 163)["detects_both"] is True
    floor = accuracy_power(0.0, 32)
    assert floor["n_needed_down"] is None and floor["n_needed_up"] is None
    assert floor["detects_both"] is False  # 0/32 cannot show a drop


def test_each_dose_is_also_paired_with_the_instruction_baseline(tmp_path: Path) -> None:
    """The instruction baseline (coefficient 0, no vector) is compared with control as every
    condition is; each dose is compared with it, paired the same way; and the dose plot keeps
    it off the coefficient's axis."""
    asked = [
        solution("instruction", problem, s, correct, tokens)
        | {"coefficient": 0.0, "vector_norm": 0.0}
        for problem, s, correct, tokens in [(0, 0, False, 70), (0, 1, True, 70)]
        + [(1, 0, True, 90), (1, 1, False, 90)]
    ]
    conditions = solve_metrics(rows() + asked, P)
    assert conditions["instruction"]["against_control"]["tokens_difference"] == -20.0
    vs = conditions["dose_0.5"]["against_instruction"]
    # dose right on (0, 0), (0, 1); the baseline on (0, 1), (1, 0): one discordant pair each way
    assert vs["right_under_control_only"] == vs["right_under_condition_only"] == 1
    assert vs["tokens_difference"] == (40 - 70 + 60 - 90) / 2
    assert "against_instruction" not in conditions["instruction"]
    assert "against_instruction" not in conditions["control"]
    plot_solution_dose(conditions, tmp_path / "dose.csv", tmp_path / "dose.png")
    with open(tmp_path / "dose.csv", newline="") as f:
        table = list(csv.reader(f))
    assert [r[0] for r in table[1:]] == ["0.0", "0.5"]  # control and the dose only
    assert table[1][4] == "100.0"
