"""Stage report: concluding rate with and without the vector, and the sweep heat map.

    dvc repro report
    paths from dvc.yaml's cmd: --steer --sweep --metrics --table --figure
    reads params.yaml section `stats`

Outputs: metrics, a table (a DVC plot: concluding rate per layer and position) and the same as
a heat map. The metrics hold two analyses (``stats``):
- per sample, as the original: rates with 95% Wilson intervals, counts per category, and a
  two-sided Fisher exact p-value, as if every sample were independent;
- per prompt (``prompt_level``): the samples of one prompt are correlated, so the intervals
  come from a bootstrap over prompts, and the test is a sign-flip permutation test of each
  prompt's steered minus control rate (both conditions run on the same prompts).
The controls (``controls``: the negated vector, random directions of its norm) get the same
comparison with control, each under its own name.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from steerpipe.cells import best_cell, concluding_by_cell
from steerpipe.config import load, run_stage, stage_args
from steerpipe.labels import CATEGORIES, CONCLUDING
from steerpipe.plots import plt, save_png, write_csv
from steerpipe.stats import (
    StatsParams,
    cluster_ci,
    fisher_p,
    pooled_difference,
    pooled_rate,
    rate_summary,
    sign_flip_p,
)
from steerpipe.storage import read_parquet, write_json

INPUTS = ("steer", "sweep")
OUTPUTS = ("metrics", "table", "figure")


def condition_summary(rows: list[dict]) -> dict[str, Any]:
    counts = Counter(r["category"] for r in rows)
    summary: dict[str, Any] = dict(rate_summary(counts[CONCLUDING], len(rows)))
    summary["categories"] = {name: counts[c] for c, name in CATEGORIES.items()}
    summary["unjudged"] = counts[None]
    return summary


def prompt_level(steer: list[dict[str, Any]], name: str, p: StatsParams) -> dict[str, Any]:
    """Condition ``name`` against control with the prompt, not the sample, as the unit:
    intervals from a bootstrap over prompts and a sign-flip test of per-prompt differences."""
    counts: dict[tuple[int, int], dict[str, list[int]]] = {}
    for r in steer:
        if r["condition"] in ("control", name):
            per = counts.setdefault((r["row"], r["step"]), {"control": [0, 0], name: [0, 0]})
            per[r["condition"]][0] += r["category"] == CONCLUDING
            per[r["condition"]][1] += 1
    prompts = [c for _, c in sorted(counts.items()) if c["control"][1] and c[name][1]]
    columns = {
        k: ([c[k][0] for c in prompts], [c[k][1] for c in prompts]) for k in ("control", name)
    }
    kw = {"seed": p.seed, "n_resamples": p.n_resamples}
    out: dict[str, Any] = {"prompts": len(prompts)}
    if len(prompts) < 2:  # no spread to resample: the sample-level analysis is all there is
        return out
    for k, column in columns.items():
        lo, hi = cluster_ci(pooled_rate, column, **kw)
        out[k] = {"ci95_low": lo, "ci95_high": hi}
    lo, hi = cluster_ci(pooled_difference, (*columns[name], *columns["control"]), **kw)
    out["difference"] = {"ci95_low": lo, "ci95_high": hi}
    per_prompt = [c[name][0] / c[name][1] - c["control"][0] / c["control"][1] for c in prompts]
    out["sign_flip_p"] = sign_flip_p(per_prompt, **kw)
    return out


def against_control(
    steer: list[dict[str, Any]], name: str, control: dict[str, Any], p: StatsParams
) -> dict[str, Any]:
    """A condition's rate, and its comparison with control per sample and per prompt."""
    mine = condition_summary([r for r in steer if r["condition"] == name])
    mine["difference"] = mine["rate"] - control["rate"]
    mine["fisher_p"] = fisher_p(mine["count"], mine["n"], control["count"], control["n"])
    mine["prompt_level"] = prompt_level(steer, name, p)
    return mine


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(StatsParams)
    steer = read_parquet(paths["steer"])
    sweep = read_parquet(paths["sweep"])
    control = condition_summary([r for r in steer if r["condition"] == "control"])
    steered = against_control(steer, "steered", control, p)
    # steered's comparison with control sits at the top of the metrics, the controls' in each
    comparison = {k: steered.pop(k) for k in ("difference", "fisher_p", "prompt_level")}
    others = sorted({r["condition"] for r in steer} - {"control", "steered"})
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
        **comparison,
        # the same comparison for the controls: the negated vector, random directions
        "controls": {name: against_control(steer, name, control, p) for name in others},
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
