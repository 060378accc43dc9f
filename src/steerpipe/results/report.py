"""Experiment A's report (stage ``report``): rates, their tests and the plots.

Each rate is of one measure (``sweep.MEASURES``): ``clean`` (concluding and not degenerate:
the headline), ``concluding`` (the raw rate the original reported) or ``degenerate``.

- ``condition_summary``: a condition's rate with a 95% Wilson interval (and, for the raw
  rate, its counts per category), per sample as the original analysed it.
- ``prompt_level``: the same comparison with the prompt as the unit (the samples of one prompt
  are correlated): intervals from a bootstrap over prompts, and a sign-flip permutation test of
  each prompt's condition-minus-control rate (every condition runs on the same prompts).
- ``condition_against_control``: both, for one condition against control (with Fisher's exact
  test per sample).
- ``dose_response``: the conditions on the vector's axis (control at 0, negated, steered and
  the doses) keyed by name; ``plot_concluding_dose`` writes it as a table and a figure.
- ``report_metrics``: the whole metrics file, from the judged steer and sweep samples and the
  logprob scores (the sweep's part: ``sweep_report``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any

from steerpipe.plots import plt, save_png, write_csv
from steerpipe.results.sweep_report import sweep_metrics
from steerpipe.stats import (
    StatsParams,
    cluster_ci,
    fisher_p,
    pooled_difference,
    pooled_rate,
    rate_summary,
    sign_flip_p,
)
from steerpipe.steering.labels import CATEGORIES
from steerpipe.steering.steer import condition_coefficient
from steerpipe.steering.sweep import MEASURES, Measure, hit


def condition_summary(
    rows: list[dict[str, Any]], measure: Measure = "concluding"
) -> dict[str, Any]:
    """A condition's rate of ``measure`` with a 95% Wilson interval; the raw rate also counts
    the categories and the unjudged samples."""
    summary: dict[str, Any] = dict(rate_summary(sum(hit(r, measure) for r in rows), len(rows)))
    if measure == "concluding":
        counts = Counter(r["category"] for r in rows)
        summary["categories"] = {name: counts[c] for c, name in CATEGORIES.items()}
        summary["unjudged"] = counts[None]
    return summary


def prompt_level(
    steer: list[dict[str, Any]], name: str, p: StatsParams, measure: Measure = "concluding"
) -> dict[str, Any]:
    """Condition ``name`` against control with the prompt, not the sample, as the unit:
    intervals from a bootstrap over prompts and a sign-flip test of per-prompt differences."""
    counts: dict[tuple[int, int], dict[str, list[int]]] = {}
    for r in steer:
        if r["condition"] in ("control", name):
            per = counts.setdefault((r["row"], r["step"]), {"control": [0, 0], name: [0, 0]})
            per[r["condition"]][0] += hit(r, measure)
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
    steer: list[dict[str, Any]],
    name: str,
    control: dict[str, Any],
    p: StatsParams,
    measure: Measure = "concluding",
) -> dict[str, Any]:
    """A condition's rate, and its comparison with control per sample and per prompt."""
    mine = condition_summary([r for r in steer if r["condition"] == name], measure)
    mine["difference"] = mine["rate"] - control["rate"]
    mine["fisher_p"] = fisher_p(mine["count"], mine["n"], control["count"], control["n"])
    mine["prompt_level"] = prompt_level(steer, name, p, measure)
    return mine


def dose_response(
    steer: list[dict[str, Any]],
    measures: dict[str, dict[Measure, dict[str, Any]]],
    coefficient: float,
) -> dict[str, dict[str, Any]]:
    """The conditions on the vector's axis (control at 0, negated, steered, the doses) by
    name, each with its coefficient, and per measure its rate, Wilson interval, interval over
    prompts and comparison with control (``<measure>_`` before each key but the raw rate's).
    A dict, not a list: ``dvc exp show`` leaves out a list."""
    norms = {r["condition"]: r["vector_norm"] for r in steer}
    points = []
    for name, by_measure in measures.items():
        c = condition_coefficient(name, coefficient)
        if c is None:  # a random direction: not the vector
            continue
        point = {"coefficient": c, "condition": name, "vector_norm": norms[name]}
        for m, s in by_measure.items():
            pre = "" if m == "concluding" else f"{m}_"
            level = s["prompt_level"]
            own = level.get("control" if name == "control" else name, {})
            point.update({pre + k: s[k] for k in ("count", "n", "rate", "ci95_low", "ci95_high")})
            point[f"{pre}prompt_ci95_low"] = own.get("ci95_low")
            point[f"{pre}prompt_ci95_high"] = own.get("ci95_high")
            if name != "control":
                point.update({pre + k: s[k] for k in ("difference", "fisher_p")})
                point[f"{pre}sign_flip_p"] = level.get("sign_flip_p")
        points.append(point)
    return {q["condition"]: q for q in sorted(points, key=lambda q: q["coefficient"])}


def report_metrics(
    steer: list[dict[str, Any]],
    sweep: list[dict[str, Any]],
    scored: list[dict[str, Any]],
    p: StatsParams,
    coefficient_cells: int = 3,
) -> dict[str, Any]:
    """The report's metrics. At the top, the raw concluding rates (``control``, ``steered``)
    and steered's comparison with control, as the original reported them; ``clean`` (the
    headline: concluding and not degenerate) and ``degenerate`` in the same layout. Then the
    controls (negated vector, random directions) and the dose-response, each with every
    measure, and the sweep's best choice by each metric. Where Claude rated every sample's
    fluency, ``combined``: each condition's mean AxBench score (``judge.axbench_score``)."""
    control_rows = [r for r in steer if r["condition"] == "control"]
    control = {m: condition_summary(control_rows, m) for m in MEASURES}
    names = sorted({r["condition"] for r in steer} - {"control"})
    vs = {
        name: {m: condition_against_control(steer, name, control[m], p, m) for m in MEASURES}
        for name in names
    }
    for m in MEASURES:  # control's interval over prompts, which each comparison computes
        level = vs["steered"][m]["prompt_level"]
        control[m]["prompt_level"] = {k: level[k] for k in ("prompts", "control") if k in level}

    def block(m: Measure) -> dict[str, Any]:
        steered = dict(vs["steered"][m])
        comparison = {k: steered.pop(k) for k in ("difference", "fisher_p", "prompt_level")}
        mine = {k: v for k, v in control[m].items() if k != "prompt_level"}
        return {"control": mine, "steered": steered, **comparison}

    def with_measures(name: str) -> dict[str, Any]:
        return {**vs[name]["concluding"], "clean": vs[name]["clean"]} | {
            "degenerate": vs[name]["degenerate"]
        }

    first = steer[0]
    extra = {}
    if all(r.get("combined") is not None for r in steer):  # Claude rated every sample's fluency
        extra["combined"] = {
            name: mean([r["combined"] for r in steer if r["condition"] == name])
            for name in ["control", *names]
        }
    return extra | {
        "cell": {k: first[k] for k in ("layer", "position", "coefficient")},
        **block("concluding"),
        "clean": block("clean"),
        "degenerate": block("degenerate"),
        # the same comparisons for the controls: the negated vector, random directions
        "controls": {n: with_measures(n) for n in names if n != "steered" and "dose_" not in n},
        "dose_response": dose_response(
            steer, {"control": control, **{n: vs[n] for n in names}}, first["coefficient"]
        ),
        "sweep": sweep_metrics(sweep, scored, coefficient_cells),
    }


def plot_concluding_dose(
    dose: dict[str, dict[str, Any]], scale: str, layer: int, table: Path, figure: Path
) -> None:
    """The dose-response as a table (a DVC plot) and a figure: the raw, clean and degenerate
    rates against the coefficient, with intervals over prompts where there are two prompts or
    more (else Wilson's)."""
    points = sorted(dose.values(), key=lambda q: q["coefficient"])
    header = ["coefficient", "concluding_rate", "clean_rate", "degenerate_rate"]
    header += ["prompt_ci95_low", "prompt_ci95_high", "clean_prompt_ci95_low"]
    header += ["clean_prompt_ci95_high", "wilson_ci95_low", "wilson_ci95_high", "n", "condition"]
    rows = [
        [q["coefficient"], q["rate"], q["clean_rate"], q["degenerate_rate"]]
        + [q["prompt_ci95_low"], q["prompt_ci95_high"], q["clean_prompt_ci95_low"]]
        + [q["clean_prompt_ci95_high"], q["ci95_low"], q["ci95_high"], q["n"], q["condition"]]
        for q in points
    ]
    write_csv(header, rows, table)
    x = [q["coefficient"] for q in points]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for pre, label in (
        ("", "concluding (raw)"),
        ("clean_", "clean"),
        ("degenerate_", "degenerate"),
    ):
        y = [q[f"{pre}rate"] for q in points]
        err: list[list[float]] = [[], []]
        for q, mid in zip(points, y, strict=True):
            has = q[f"{pre}prompt_ci95_low"] is not None
            low = q[f"{pre}prompt_ci95_low"] if has else q[f"{pre}ci95_low"]
            high = q[f"{pre}prompt_ci95_high"] if has else q[f"{pre}ci95_high"]
            err[0].append(mid - low)
            err[1].append(high - mid)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    unit = "the layer's mean residual norm" if scale == "norm" else "the vector"
    ax.set_xlabel(f"coefficient (in {unit})")
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"dose-response at layer {layer}; 95% intervals over prompts", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    save_png(fig, figure)
