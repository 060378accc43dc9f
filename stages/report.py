"""Stage report: concluding rate with and without the vector, and the sweep heat map.

    python stages/report.py

Outputs: data/report/metrics.json (rates with 95% Wilson intervals, counts per category, a
two-sided Fisher exact p-value), data/report/sweep.csv (a DVC plot: concluding rate per layer
and position) and data/report/sweep.png (the same as a heat map).
"""

from __future__ import annotations

import csv
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)

from steerpipe.cells import best_cell, concluding_by_cell  # noqa: E402
from steerpipe.config import run_stage  # noqa: E402
from steerpipe.labels import CATEGORIES, CONCLUDING  # noqa: E402
from steerpipe.stats import fisher_p, rate_summary  # noqa: E402
from steerpipe.storage import atomic_path, read_parquet, write_json  # noqa: E402


def condition_summary(rows: list[dict]) -> dict:
    counts = Counter(r["category"] for r in rows)
    summary: dict[str, object] = dict(rate_summary(counts[CONCLUDING], len(rows)))
    summary["categories"] = {name: counts[c] for c, name in CATEGORIES.items()}
    summary["unjudged"] = counts[None]
    return summary


def main() -> None:
    steer = read_parquet("data/steer/judged.parquet")
    sweep = read_parquet("data/sweep/judged.parquet")
    control = condition_summary([r for r in steer if r["condition"] == "control"])
    steered = condition_summary([r for r in steer if r["condition"] == "steered"])
    first = steer[0]
    cells = concluding_by_cell(sweep)
    best = best_cell(sweep)  # the rule that steer.layer auto follows
    metrics = {
        "cell": {
            "layer": first["layer"],
            "position": first["position"],
            "coefficient": first["coefficient"],
        },
        "control": control,
        "steered": steered,
        "difference": steered["rate"] - control["rate"],
        "fisher_p": fisher_p(steered["count"], steered["n"], control["count"], control["n"]),
        "sweep": {
            "cells": len(cells),
            "samples": len(sweep),
            "best_layer": best[0],
            "best_position": best[1],
            "best_rate": cells[best][0] / cells[best][1],
        },
    }
    write_json(metrics, "data/report/metrics.json")

    layers = sorted({c[0] for c in cells})
    positions = sorted({c[1] for c in cells})
    with atomic_path("data/report/sweep.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "position", "concluding_rate", "n"])
        for (layer, pos), (hit, n) in sorted(cells.items()):
            w.writerow([layer, pos, hit / n, n])
    grid = [
        [
            cells[(lay, pos)][0] / cells[(lay, pos)][1] if (lay, pos) in cells else float("nan")
            for pos in positions
        ]
        for lay in layers
    ]
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(positions), 1.2 + 0.35 * len(layers)))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(positions)), [str(p) for p in positions])
    ax.set_yticks(range(len(layers)), [str(lay) for lay in layers])
    ax.set_xlabel("step position of the vector")
    ax.set_ylabel("layer (hook_resid_pre)")
    per_cell = max(n for _, n in cells.values())
    ax.set_title(f"concluding rate ({per_cell} samples a cell); control {control['rate']:.2f}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    with atomic_path("data/report/sweep.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
