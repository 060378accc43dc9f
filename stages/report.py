"""Stage report: concluding rate with and without the vector, and the sweep heat map.

    dvc repro report
    paths from dvc.yaml's cmd: --steer --sweep --metrics --table --figure

Outputs: metrics (rates with 95% Wilson intervals, counts per category, a two-sided Fisher
exact p-value), a table (a DVC plot: concluding rate per layer and position) and the same as a
heat map.
"""

from __future__ import annotations

from collections import Counter

from steerpipe.cells import best_cell, concluding_by_cell
from steerpipe.config import run_stage, stage_args
from steerpipe.labels import CATEGORIES, CONCLUDING
from steerpipe.plots import plt, save_png, write_csv
from steerpipe.stats import fisher_p, rate_summary
from steerpipe.storage import read_parquet, write_json

INPUTS = ("steer", "sweep")
OUTPUTS = ("metrics", "table", "figure")


def condition_summary(rows: list[dict]) -> dict:
    counts = Counter(r["category"] for r in rows)
    summary: dict[str, object] = dict(rate_summary(counts[CONCLUDING], len(rows)))
    summary["categories"] = {name: counts[c] for c, name in CATEGORIES.items()}
    summary["unjudged"] = counts[None]
    return summary


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    steer = read_parquet(paths["steer"])
    sweep = read_parquet(paths["sweep"])
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
    write_json(metrics, paths["metrics"])

    layers = sorted({c[0] for c in cells})
    positions = sorted({c[1] for c in cells})
    table = [[layer, pos, hit / n, n] for (layer, pos), (hit, n) in sorted(cells.items())]
    write_csv(["layer", "position", "concluding_rate", "n"], table, paths["table"])
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
    save_png(fig, paths["figure"])
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
