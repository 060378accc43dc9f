"""results.neuron_report: Yes/No accuracy per condition, paired with base, on hand-made
answers, every number worked out by hand."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from steerpipe.results.neuron_report import (
    answers_summary,
    balanced_accuracy,
    neuron_metrics,
    paired_with_base,
    plot_accuracy,
)
from steerpipe.stats import StatsParams, mcnemar_p, wilson_interval

P = StatsParams(seed=0, n_resamples=1000, samples=2)


def answers() -> list[dict[str, Any]]:
    """Four questions (Yes, Yes, No, No). Base answers Yes to all: right on 0 and 1. Reasoning
    x2 answers No to all: right on 2 and 3, four answers changed. Memory x2 answers as base but
    with other words on question 0. Margins: base 1, 2, -1, -2; reasoning x2 each 0.5 lower
    but question 3's, 1.5 higher; memory x2 as base."""
    truth = [True, True, False, False]
    conditions = {
        "base": (None, None, None, [True, True, True, True]),
        "reasoning@3x2": ("reasoning", 3, 2.0, [False, False, False, False]),
        "memory@3x2": ("memory", 3, 2.0, [True, True, True, True]),
    }
    base_margin = [1.0, 2.0, -1.0, -2.0]
    shift = {"base": [0.0] * 4, "reasoning@3x2": [-0.5, -0.5, -0.5, 1.5], "memory@3x2": [0.0] * 4}
    rows = []
    for name, (neurons, layer, strength, parsed) in conditions.items():
        for q, (t, a) in enumerate(zip(truth, parsed, strict=True)):
            text = "Yes." if a else "No."
            if name.startswith("memory") and q == 0:
                text = "Yes, it does."
            rows.append(
                {
                    "id": q,
                    "condition": name,
                    "neurons": neurons,
                    "layer": layer,
                    "strength": strength,
                    "n_features": 0 if neurons is None else 5,
                    "answer": t,
                    "parsed": a,
                    "correct": a == t,
                    "generation": text,
                    "margin": base_margin[q] + shift[name][q],
                }
            )
    return rows


def by(condition: str) -> list[dict[str, Any]]:
    return [r for r in answers() if r["condition"] == condition]


def test_paired_with_base_counts_the_discordant_questions() -> None:
    base = {r["id"]: r for r in by("base")}
    got = paired_with_base(by("reasoning@3x2"), base, P)
    assert (got["right_under_base_only"], got["right_under_condition_only"]) == (2, 2)
    assert got["mcnemar_p"] == mcnemar_p(2, 2)
    assert got["accuracy_difference"] == 0.0
    assert got["ci95_low"] <= 0.0 <= got["ci95_high"]


def test_the_margin_change_is_paired_by_question() -> None:
    base = {r["id"]: r for r in by("base")}
    change = paired_with_base(by("reasoning@3x2"), base, P)["margin_change"]
    assert change["mean"] == 0.0  # (-0.5 - 0.5 - 0.5 + 1.5) / 4
    assert change["mean_abs"] == 0.75  # (0.5 + 0.5 + 0.5 + 1.5) / 4
    assert (change["raised"], change["lowered"]) == (1, 3)
    # sign flips of (-0.5, -0.5, -0.5, 1.5): |mean| >= 0 for all 16
    assert change["sign_flip_p"] == 1.0
    assert change["ci95_low"] < 0.0 < change["ci95_high"]
    memory = paired_with_base(by("memory@3x2"), base, P)["margin_change"]
    assert (memory["mean"], memory["raised"], memory["lowered"]) == (0.0, 0, 0)


def test_balanced_accuracy_and_the_majority_baseline() -> None:
    base = {r["id"]: r for r in by("base")}
    # base answers Yes to everything: right on both Yes questions, neither No one
    assert answers_summary(by("base"), base, P)["balanced_accuracy"] == 0.5
    assert answers_summary(by("reasoning@3x2"), base, P)["mean_margin"] == 0.0  # 0.5+1.5-1.5-0.5
    metrics = neuron_metrics(answers(), P)
    assert (metrics["yes_rate"], metrics["majority_baseline"]) == (0.5, 0.5)
    uneven = [r for r in answers() if r["id"] != 3]  # 2 Yes, 1 No
    assert neuron_metrics(uneven, P)["majority_baseline"] == 2 / 3
    assert balanced_accuracy([r for r in uneven if r["condition"] == "base"]) == 0.5
    uneven_base = [r for r in uneven if r["condition"] == "base"]
    assert answers_summary(uneven_base, base, P)["mean_margin"] == 2 / 3  # (1 + 2 - 1) / 3
    assert balanced_accuracy([r for r in answers() if r["answer"]]) is None


def test_answers_summary_counts_changes_against_base() -> None:
    base = {r["id"]: r for r in by("base")}
    s = answers_summary(by("reasoning@3x2"), base, P)
    assert s["accuracy"]["count"] == 2
    assert (s["accuracy"]["ci95_low"], s["accuracy"]["ci95_high"]) == wilson_interval(2, 4)
    assert (s["answer_changed_rate"], s["text_changed_rate"], s["unparsable_rate"]) == (1, 1, 0)
    assert (s["neurons"], s["layer"], s["strength"], s["n_features"]) == ("reasoning", 3, 2.0, 5)
    memory = answers_summary(by("memory@3x2"), base, P)
    assert (memory["answer_changed_rate"], memory["text_changed_rate"]) == (0.0, 0.25)
    assert "paired_with_base" not in answers_summary(by("base"), base, P)


def test_metrics_and_the_accuracy_table(tmp_path: Path) -> None:
    metrics = neuron_metrics(answers(), P)
    assert (metrics["questions"], metrics["yes_rate"]) == (4, 0.5)
    assert set(metrics["conditions"]) == {"base", "reasoning@3x2", "memory@3x2"}
    plot_accuracy(metrics, tmp_path / "accuracy.csv", tmp_path / "accuracy.png")
    with open(tmp_path / "accuracy.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["strength", "accuracy", "ci95_low", "ci95_high", "series"]
    assert [(r[0], r[1], r[4]) for r in table[1:]] == [
        ("2.0", "0.5", "base"),  # base as a flat line at every strength
        ("2.0", "0.5", "memory L3 (5)"),
        ("2.0", "0.5", "reasoning L3 (5)"),
    ]
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
