"""Experiment B's report (stage ``neuron_report``): Yes/No accuracy and answer margins against
the strength.

- ``answers_summary``: per condition, accuracy with a 95% Wilson interval, balanced accuracy
  (the mean of the accuracies on Yes and on No questions: 0.5 for a model that answers one
  word to everything), the rate of answers with no Yes/No, how often the answer, or the text,
  differs from base's on the same question, and the mean answer margin (the log-probability
  of the right answer over the wrong one, ``transcoders/neuron_eval.answer_margins``); for
  every condition but base, ``paired_with_base``: on the same questions, the accuracy
  difference with a bootstrap interval over questions, the discordant pairs and McNemar's exact
  test, and the margin's mean change (toward the right answer) with a bootstrap interval and
  a sign-flip test, and its mean absolute change (how far it moved either way).
- ``neuron_metrics``: the metrics file, with the majority-answer baseline that accuracy must
  beat; ``plot_accuracy``: accuracy per strength, one line per neuron set and layer, base as a
  flat line, as a table (a DVC plot) and a figure.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from steerpipe.plots import plt, save_png, write_csv
from steerpipe.stats import (
    StatsParams,
    cluster_ci,
    mcnemar_p,
    mean_statistic,
    pooled_difference,
    rate_summary,
    sign_flip_p,
)


def paired_with_base(
    rows: list[dict[str, Any]], base: dict[int, dict[str, Any]], p: StatsParams
) -> dict[str, Any]:
    """The condition against base on the same questions: the accuracy difference with a
    bootstrap interval over questions, the discordant pairs and McNemar's exact test."""
    ours = [float(r["correct"]) for r in rows]
    theirs = [float(base[r["id"]]["correct"]) for r in rows]
    ones = [1.0] * len(rows)
    lo, hi = cluster_ci(
        pooled_difference, (ours, ones, theirs, ones), seed=p.seed, n_resamples=p.n_resamples
    )
    pairs = [(r["correct"], base[r["id"]]["correct"]) for r in rows]
    only_base = sum(bool(b and not o) for o, b in pairs)
    only_ours = sum(bool(o and not b) for o, b in pairs)
    out: dict[str, Any] = {
        "accuracy_difference": (sum(ours) - sum(theirs)) / len(rows),
        "ci95_low": lo,
        "ci95_high": hi,
        "right_under_base_only": only_base,
        "right_under_condition_only": only_ours,
        "mcnemar_p": mcnemar_p(only_ours, only_base),
    }
    if "margin" in rows[0] and len(rows) >= 2:
        kw = {"seed": p.seed, "n_resamples": p.n_resamples}
        change = [r["margin"] - base[r["id"]]["margin"] for r in rows]
        lo, hi = cluster_ci(mean_statistic, (change,), **kw)
        out["margin_change"] = {
            "mean": float(np.mean(change)),
            "mean_abs": float(np.mean(np.abs(change))),  # how far, toward the answer or not
            "ci95_low": lo,
            "ci95_high": hi,
            "sign_flip_p": sign_flip_p(change, **kw),
            "raised": sum(c > 0 for c in change),
            "lowered": sum(c < 0 for c in change),
        }
    return out


def balanced_accuracy(rows: list[dict[str, Any]]) -> float | None:
    """The mean of the accuracies on Yes questions and on No questions (None without both)."""
    rates = []
    for answer in (True, False):
        part = [r["correct"] for r in rows if r["answer"] is answer]
        if not part:
            return None
        rates.append(sum(part) / len(part))
    return sum(rates) / 2


def answers_summary(
    rows: list[dict[str, Any]], base: dict[int, dict[str, Any]], p: StatsParams
) -> dict[str, Any]:
    n = len(rows)
    changed = sum(r["parsed"] != base[r["id"]]["parsed"] for r in rows)
    text_changed = sum(r["generation"] != base[r["id"]]["generation"] for r in rows)
    out = {
        "accuracy": rate_summary(sum(r["correct"] for r in rows), n),
        "balanced_accuracy": balanced_accuracy(rows),
        "unparsable_rate": sum(r["parsed"] is None for r in rows) / n,
        "answer_changed_rate": changed / n,
        "text_changed_rate": text_changed / n,
        **{k: rows[0][k] for k in ("layer", "neurons", "strength", "n_features")},
    }
    if "margin" in rows[0]:
        out["mean_margin"] = float(np.mean([r["margin"] for r in rows]))
    if rows[0].get("kl") is not None:  # what else the intervention changes, on neutral text
        out["kl"] = rows[0]["kl"]
    if rows[0]["condition"] != "base":
        out["paired_with_base"] = paired_with_base(rows, base, p)
    return out


def neuron_metrics(rows: list[dict[str, Any]], p: StatsParams) -> dict[str, Any]:
    """The number of questions, their share of Yes answers, the accuracy of always giving the
    more frequent answer (what accuracy must beat), and every condition's summary."""
    by_condition: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_condition[r["condition"]].append(r)
    base = {r["id"]: r for r in by_condition["base"]}
    yes_rate = sum(r["answer"] for r in base.values()) / len(base)
    return {
        "questions": len(base),
        "yes_rate": yes_rate,
        "majority_baseline": max(yes_rate, 1 - yes_rate),
        "conditions": {name: answers_summary(part, base, p) for name, part in by_condition.items()},
    }


def plot_accuracy(metrics: dict[str, Any], table: Path, figure: Path) -> None:
    conditions = metrics["conditions"]
    series: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    for m in conditions.values():
        if m["neurons"] is not None:
            series[f"{m['neurons']} L{m['layer']} ({m['n_features']})"].append((m["strength"], m))
    strengths = sorted({s for points in series.values() for s, _ in points})
    base_acc = conditions["base"]["accuracy"]
    rows = [
        [s, base_acc["rate"], base_acc["ci95_low"], base_acc["ci95_high"], "base"]
        for s in strengths
    ]
    for label, points in sorted(series.items()):
        for s, m in sorted(points, key=lambda x: x[0]):
            a = m["accuracy"]
            rows.append([s, a["rate"], a["ci95_low"], a["ci95_high"], label])
    write_csv(["strength", "accuracy", "ci95_low", "ci95_high", "series"], rows, table)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.axhline(base_acc["rate"], color="grey", linestyle="--", label="base (no hook)")
    for label, points in sorted(series.items()):
        points = sorted(points, key=lambda x: x[0])
        xs = [s for s, _ in points]
        acc = [m["accuracy"] for _, m in points]
        err = [[a["rate"] - a["ci95_low"] for a in acc], [a["ci95_high"] - a["rate"] for a in acc]]
        ax.errorbar(xs, [a["rate"] for a in acc], yerr=err, marker="o", capsize=3, label=label)
    ax.set_xlabel("strength (feature multiplier)")
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.set_ylim(0, 1)
    ax.set_title(f"Yes/No accuracy, {metrics['questions']} held-out questions")
    ax.legend(fontsize=8)
    save_png(fig, figure)
