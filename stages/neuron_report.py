"""Stage neuron_report: accuracy against strength for reasoning and memory neurons.

    dvc repro neuron_report
    paths from dvc.yaml's cmd: --generations --metrics --table --figure

Outputs: metrics (per condition: accuracy with a 95% Wilson interval, the rate of answers with
no Yes/No, and how often the answer, or the text, differs from base's on the same question), a
table (a DVC plot: accuracy per strength, one line per neuron set and layer, base as a flat
line) and the same as a figure.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from steerpipe.config import run_stage, stage_args
from steerpipe.plots import plt, save_png, write_csv
from steerpipe.stats import rate_summary
from steerpipe.storage import read_parquet, write_json

INPUTS = ("generations",)
OUTPUTS = ("metrics", "table", "figure")


def summarise(rows: list[dict], base: dict[int, dict]) -> dict[str, Any]:
    n = len(rows)
    changed = sum(r["parsed"] != base[r["id"]]["parsed"] for r in rows)
    text_changed = sum(r["generation"] != base[r["id"]]["generation"] for r in rows)
    return {
        "accuracy": rate_summary(sum(r["correct"] for r in rows), n),
        "unparsable_rate": sum(r["parsed"] is None for r in rows) / n,
        "answer_changed_rate": changed / n,
        "text_changed_rate": text_changed / n,
        **{k: rows[0][k] for k in ("layer", "neurons", "strength", "n_features")},
    }


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    rows = read_parquet(paths["generations"])
    by_condition: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_condition[r["condition"]].append(r)
    base = {r["id"]: r for r in by_condition["base"]}
    conditions = {name: summarise(part, base) for name, part in by_condition.items()}
    metrics = {
        "questions": len(base),
        "yes_rate": sum(r["answer"] for r in base.values()) / len(base),
        "conditions": conditions,
    }
    write_json(metrics, paths["metrics"])

    series: dict[str, list[tuple[float, dict]]] = defaultdict(list)
    for m in conditions.values():
        if m["neurons"] is not None:
            series[f"{m['neurons']} L{m['layer']} ({m['n_features']})"].append((m["strength"], m))
    strengths = sorted({s for points in series.values() for s, _ in points})
    base_acc = conditions["base"]["accuracy"]
    table = [
        [s, base_acc["rate"], base_acc["ci95_low"], base_acc["ci95_high"], "base"]
        for s in strengths
    ]
    for label, points in sorted(series.items()):
        for s, m in sorted(points, key=lambda x: x[0]):
            a = m["accuracy"]
            table.append([s, a["rate"], a["ci95_low"], a["ci95_high"], label])
    write_csv(["strength", "accuracy", "ci95_low", "ci95_high", "series"], table, paths["table"])

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
    ax.set_title(f"Yes/No accuracy, {len(base)} held-out questions")
    ax.legend(fontsize=8)
    save_png(fig, paths["figure"])
    print({k: v["accuracy"]["rate"] for k, v in conditions.items()})


if __name__ == "__main__":
    run_stage(main)
