"""Experiment A's report (stage ``report``): concluding rates, their tests and the plots.

- ``condition_summary``: a condition's concluding rate with a 95% Wilson interval and its
  counts per category, per sample as the original analysed it.
- ``prompt_level``: the same comparison with the prompt as the unit (the samples of one prompt
  are correlated): intervals from a bootstrap over prompts, and a sign-flip permutation test of
  each prompt's condition-minus-control rate (every condition runs on the same prompts).
- ``condition_against_control``: both, for one condition against control (with Fisher's exact
  test per sample).
- ``dose_response``: the conditions on the vector's axis (control at 0, negated, steered and
  the doses) keyed by name; ``plot_concluding_dose`` writes it as a table and a figure.
- ``report_metrics``: the whole metrics file, from the judged steer and sweep samples and the
  logprob scores; ``sweep_table`` and ``plot_sweep``: the sweep's grid as a table and heat maps.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from steerpipe.plots import plt, save_png, write_csv
from steerpipe.stats import (
    StatsParams,
    cluster_ci,
    fisher_p,
    pooled_difference,
    pooled_rate,
    rank_correlation,
    rate_summary,
    sign_flip_p,
)
from steerpipe.steering.labels import CATEGORIES, CONCLUDING
from steerpipe.steering.steer import condition_coefficient
from steerpipe.steering.sweep import best_cell, best_scored_cell, concluding_by_cell

Cell = tuple[int, int]


def condition_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
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


def condition_against_control(
    steer: list[dict[str, Any]], name: str, control: dict[str, Any], p: StatsParams
) -> dict[str, Any]:
    """A condition's rate, and its comparison with control per sample and per prompt."""
    mine = condition_summary([r for r in steer if r["condition"] == name])
    mine["difference"] = mine["rate"] - control["rate"]
    mine["fisher_p"] = fisher_p(mine["count"], mine["n"], control["count"], control["n"])
    mine["prompt_level"] = prompt_level(steer, name, p)
    return mine


def dose_response(
    steer: list[dict[str, Any]], summaries: dict[str, dict[str, Any]], coefficient: float
) -> dict[str, dict[str, Any]]:
    """The conditions on the vector's axis (control at 0, negated, steered, the doses) by
    name, each with its coefficient, rate, Wilson interval, interval over prompts and its
    comparison with control. A dict, not a list: ``dvc exp show`` leaves out a list."""
    norms = {r["condition"]: r["vector_norm"] for r in steer}
    points = []
    for name, s in summaries.items():
        c = condition_coefficient(name, coefficient)
        if c is None:  # a random direction: not the vector
            continue
        level = s["prompt_level"]
        own = level.get("control" if name == "control" else name, {})
        point = {"coefficient": c, "condition": name, "vector_norm": norms[name]}
        point.update({k: s[k] for k in ("count", "n", "rate", "ci95_low", "ci95_high")})
        point["prompt_ci95_low"] = own.get("ci95_low")
        point["prompt_ci95_high"] = own.get("ci95_high")
        if name != "control":
            point.update(difference=s["difference"], fisher_p=s["fisher_p"])
            point["sign_flip_p"] = level.get("sign_flip_p")
        points.append(point)
    return {q["condition"]: q for q in sorted(points, key=lambda q: q["coefficient"])}


def report_metrics(
    steer: list[dict[str, Any]],
    sweep: list[dict[str, Any]],
    scored: list[dict[str, Any]],
    p: StatsParams,
) -> dict[str, Any]:
    """The report's metrics: the cell, control, steered and its comparison with control at the
    top, the controls (negated vector, random directions), the dose-response, and the sweep's
    best cell by either metric with the rank correlation of the two over the grid."""
    control = condition_summary([r for r in steer if r["condition"] == "control"])
    steered = condition_against_control(steer, "steered", control, p)
    # steered's comparison with control sits at the top of the metrics, the controls' in each
    comparison = {k: steered.pop(k) for k in ("difference", "fisher_p", "prompt_level")}
    others = sorted({r["condition"] for r in steer} - {"control", "steered"})
    doses = [name for name in others if name.startswith("dose_")]
    controls = {
        name: condition_against_control(steer, name, control, p)
        for name in others
        if name not in doses
    }
    first = steer[0]
    cells = concluding_by_cell(sweep)
    best = best_cell(sweep)  # the rules that steer.layer auto follows, by sweep.metric
    scores = {(r["layer"], r["position"]): r["score"] for r in scored}
    best_scored = best_scored_cell(scored)
    both = sorted(set(cells) & set(scores))
    return {
        "cell": {
            "layer": first["layer"],
            "position": first["position"],
            "coefficient": first["coefficient"],
        },
        "control": control,
        "steered": steered,
        **comparison,
        # the same comparison for the controls: the negated vector, random directions
        "controls": controls,
        "dose_response": dose_response(
            steer,
            {
                "control": {**control, "prompt_level": comparison["prompt_level"]},
                "steered": {**steered, **comparison},
                **controls,
                **{name: condition_against_control(steer, name, control, p) for name in doses},
            },
            first["coefficient"],
        ),
        "sweep": {
            "cells": len(cells),
            "samples": len(sweep),
            "best_layer": best[0],
            "best_position": best[1],
            "best_rate": cells[best][0] / cells[best][1],
            "best_logprob_layer": best_scored[0],
            "best_logprob_position": best_scored[1],
            "best_logprob_score": scores[best_scored],
            # do the sampled-and-judged and the teacher-forced metrics rank the cells alike?
            "rank_correlation": rank_correlation(
                [cells[c][0] / cells[c][1] for c in both], [scores[c] for c in both]
            ),
        },
    }


def plot_concluding_dose(
    dose: dict[str, dict[str, Any]], scale: str, layer: int, table: Path, figure: Path
) -> None:
    """The dose-response as a table (a DVC plot) and a figure, with intervals over prompts
    where there are two prompts or more (else Wilson's)."""
    points = sorted(dose.values(), key=lambda q: q["coefficient"])
    header = ["coefficient", "concluding_rate", "prompt_ci95_low", "prompt_ci95_high"]
    header += ["wilson_ci95_low", "wilson_ci95_high", "n", "condition"]
    rows = [
        [q["coefficient"], q["rate"], q["prompt_ci95_low"], q["prompt_ci95_high"]]
        + [q["ci95_low"], q["ci95_high"], q["n"], q["condition"]]
        for q in points
    ]
    write_csv(header, rows, table)
    x = [q["coefficient"] for q in points]
    y = [q["rate"] for q in points]
    err: list[list[float]] = [[], []]
    for q in points:
        has = q["prompt_ci95_low"] is not None
        err[0].append(q["rate"] - (q["prompt_ci95_low"] if has else q["ci95_low"]))
        err[1].append((q["prompt_ci95_high"] if has else q["ci95_high"]) - q["rate"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3)
    ax.axhline(y[x.index(0.0)], color="grey", lw=0.8, ls="--", label="control")
    unit = "the layer's mean residual norm" if scale == "norm" else "the vector"
    ax.set_xlabel(f"coefficient (in {unit})")
    ax.set_ylabel("concluding rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"dose-response at layer {layer}; 95% intervals over prompts")
    ax.legend(loc="best")
    save_png(fig, figure)


def sweep_table(
    sweep: list[dict[str, Any]], scored: list[dict[str, Any]]
) -> tuple[list[int], list[int], list[list[Any]]]:
    """(layers, positions, rows): per layer and position, the judged concluding rate (nan
    where the cell was not sampled), its samples and the logprob score (nan where unscored)."""
    cells = concluding_by_cell(sweep)
    scores = {(r["layer"], r["position"]): r["score"] for r in scored}
    layers = sorted({c[0] for c in cells} | {c[0] for c in scores})
    positions = sorted({c[1] for c in cells} | {c[1] for c in scores})
    nan = float("nan")
    rows = [
        [lay, pos, cells[(lay, pos)][0] / cells[(lay, pos)][1] if (lay, pos) in cells else nan]
        + [cells[(lay, pos)][1] if (lay, pos) in cells else 0, scores.get((lay, pos), nan)]
        for lay in layers
        for pos in positions
    ]
    return layers, positions, rows


def plot_sweep(
    sweep: list[dict[str, Any]],
    scored: list[dict[str, Any]],
    metrics: dict[str, Any],
    table: Path,
    figure: Path,
) -> None:
    """The sweep's grid as a table (a DVC plot) and two heat maps side by side: the judged
    concluding rate and the logprob score."""
    layers, positions, rows = sweep_table(sweep, scored)
    header = ["layer", "position", "concluding_rate", "n", "logprob_score"]
    write_csv(header, rows, table)
    rates = [[row[2] for row in rows if row[0] == lay] for lay in layers]
    logps = [[row[4] for row in rows if row[0] == lay] for lay in layers]
    width = 1.2 + 0.8 * len(positions)
    fig, axes = plt.subplots(1, 2, figsize=(2 * width + 1, 1.2 + 0.35 * len(layers)))
    per_cell = max(row[3] for row in rows)  # samples a cell, 0 where none
    rho = metrics["sweep"]["rank_correlation"]["spearman"]
    titles = [
        f"concluding rate ({per_cell} samples a cell); control {metrics['control']['rate']:.2f}",
        "logprob score (nats)" + ("" if rho is None else f"; Spearman {rho:+.2f} with the left"),
    ]
    for ax, grid, title, limits in zip(
        axes, (rates, logps), titles, ((0, 1), (None, None)), strict=True
    ):
        im = ax.imshow(grid, vmin=limits[0], vmax=limits[1], cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(positions)), [str(p) for p in positions])
        ax.set_yticks(range(len(layers)), [str(lay) for lay in layers])
        ax.set_xlabel("step position of the vector")
        ax.set_ylabel("layer (hook_resid_pre)")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax)
    save_png(fig, figure)
