"""Experiment B's report (stage ``neuron_report``): Yes/No accuracy against the strength.

- ``answers_summary``: per condition, accuracy with a 95% Wilson interval, the rate of answers
  with no Yes/No, and how often the answer, or the text, differs from base's on the same
  question; for every condition but base, ``paired_with_base``: the accuracy difference on the
  same questions with a bootstrap interval over questions, the discordant pairs and McNemar's
  exact test.
- ``neuron_metrics``: the metrics file; ``plot_accuracy``: accuracy per strength, one line per
  neuron set and layer, base as a flat line, as a table (a DVC plot) and a figure.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from steerpipe.plots import plt, save_png, write_csv
from steerpipe.stats import StatsParams, cluster_ci, mcnemar_p, pooled_difference, rate_summary


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
    return {
        "accuracy_difference": (sum(ours) - sum(theirs)) / len(rows),
        "ci95_low": lo,
        "ci95_high": hi,
        "right_under_base_only": only_base,
        "right_under_condition_only": only_ours,
        "mcnemar_p": mcnemar_p(only_ours, only_base),
    }


def answers_summary(
    rows: list[dict[str, Any]], base: dict[int, dict[str, Any]], p: StatsParams
) -> dict[str, Any]:
    n = len(rows)
    changed = sum(r["parsed"] != base[r["id"]]["parsed"] for r in rows)
    text_changed = sum(r["generation"] != base[r["id"]]["generation"] for r in rows)
    out = {
        "accuracy": rate_summary(sum(r["correct"] for r in rows), n),
        "unparsable_rate": sum(r["parsed"] is None for r in rows) / n,
        "answer_changed_rate": changed / n,
        "text_changed_rate": text_changed / n,
        **{k: rows[0][k] for k in ("layer", "neurons", "strength", "n_features")},
    }
    if rows[0]["condition"] != "base":
        out["paired_with_base"] = paired_with_base(rows, base, p)
    return out


def neuron_metrics(rows: list[dict[str, Any]], p: StatsParams) -> dict[str, Any]:
    """The number of questions, base's share of Yes answers, and every condition's summary."""
    by_condition: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_condition[r["condition"]].append(r)
    base = {r["id"]: r for r in by_condition["base"]}
    return {
        "questions": len(base),
        "yes_rate": sum(r["answer"] for r in base.values()) / len(base),
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
