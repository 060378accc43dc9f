"""Experiment A's report (stage ``report``): rates, their tests and the plots.

Each rate is of one measure (``sweep.MEASURES``): ``clean`` (concluding and not degenerate:
the headline), ``concluding`` (the raw rate the original reported) or ``degenerate``.

- ``condition_summary``: a condition's rate with a 95% Wilson interval (and, for the raw
  rate, its counts per category), per sample as the original analysed it.
- ``prompt_level``: the same comparison with the prompt as the unit (the samples of one prompt
  are correlated): intervals from a bootstrap over prompts, and a sign-flip permutation test of
  each prompt's condition-minus-control rate (every condition runs on the same prompts).
- ``condition_against_control``: both, for one condition against control (with Fisher's exact
  test per sample); and for steered against a prompting baseline, paired the same way.
- ``moved``: the share of prompts a condition moved up, left unchanged and moved down against
  control; ``plot_spread`` draws every condition's per-prompt differences.
- ``dose_response``: the conditions on the vector's axis (control at 0, negated, steered and
  the doses) keyed by name, with each one's KL on neutral text; ``plot_concluding_dose``
  writes it as a table and a figure.
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
from steerpipe.steering.conditions import BASELINES, condition_coefficient
from steerpipe.steering.labels import CATEGORIES
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


def per_prompt(
    steer: list[dict[str, Any]], name: str, against: str, measure: Measure
) -> dict[tuple[int, int], dict[str, list[int]]]:
    """(hits, samples) of ``name`` and ``against`` per prompt (row, step) that both ran."""
    counts: dict[tuple[int, int], dict[str, list[int]]] = {}
    for r in steer:
        if r["condition"] in (against, name):
            per = counts.setdefault((r["row"], r["step"]), {against: [0, 0], name: [0, 0]})
            per[r["condition"]][0] += hit(r, measure)
            per[r["condition"]][1] += 1
    return {k: c for k, c in sorted(counts.items()) if c[against][1] and c[name][1]}


def prompt_differences(
    steer: list[dict[str, Any]], name: str, measure: Measure, against: str = "control"
) -> dict[tuple[int, int], float]:
    """Each prompt's rate of ``measure`` under ``name`` minus under ``against``."""
    return {
        k: c[name][0] / c[name][1] - c[against][0] / c[against][1]
        for k, c in per_prompt(steer, name, against, measure).items()
    }


def moved(differences: list[float]) -> dict[str, float | int]:
    """The share of prompts a condition moved up, left unchanged and moved down (Tan et al.,
    arXiv 2407.12404: a mean hides the prompts that move the wrong way)."""
    n = len(differences)
    up, down = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    return {"up": up / n, "same": (n - up - down) / n, "down": down / n, "prompts": n}


def prompt_level(
    steer: list[dict[str, Any]],
    name: str,
    p: StatsParams,
    measure: Measure = "concluding",
    against: str = "control",
) -> dict[str, Any]:
    """Condition ``name`` against ``against`` (control, or a baseline) with the prompt, not
    the sample, as the unit: intervals from a bootstrap over prompts, a sign-flip test of
    per-prompt differences, and the share of prompts moved up, unchanged and down."""
    prompts = list(per_prompt(steer, name, against, measure).values())
    columns = {k: ([c[k][0] for c in prompts], [c[k][1] for c in prompts]) for k in (against, name)}
    differences = [c[name][0] / c[name][1] - c[against][0] / c[against][1] for c in prompts]
    kw = {"seed": p.seed, "n_resamples": p.n_resamples}
    out: dict[str, Any] = {"prompts": len(prompts)}
    if prompts:
        out["moved"] = moved(differences)
    if len(prompts) < 2:  # no spread to resample: the sample-level analysis is all there is
        return out
    for k, column in columns.items():
        lo, hi = cluster_ci(pooled_rate, column, **kw)
        out[k] = {"ci95_low": lo, "ci95_high": hi}
    lo, hi = cluster_ci(pooled_difference, (*columns[name], *columns[against]), **kw)
    out["difference"] = {"ci95_low": lo, "ci95_high": hi}
    out["sign_flip_p"] = sign_flip_p(differences, **kw)
    return out


def condition_against_control(
    steer: list[dict[str, Any]],
    name: str,
    control: dict[str, Any],
    p: StatsParams,
    measure: Measure = "concluding",
    against: str = "control",
) -> dict[str, Any]:
    """A condition's rate, and its comparison with control (``control``: its summary; or
    with the condition ``against``) per sample and per prompt."""
    mine = condition_summary([r for r in steer if r["condition"] == name], measure)
    mine["difference"] = mine["rate"] - control["rate"]
    mine["fisher_p"] = fisher_p(mine["count"], mine["n"], control["count"], control["n"])
    mine["prompt_level"] = prompt_level(steer, name, p, measure, against)
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
    kls = {r["condition"]: r.get("kl") for r in steer}
    points = []
    for name, by_measure in measures.items():
        c = condition_coefficient(name, coefficient)
        if c is None:  # a random direction: not the vector
            continue
        point = {"coefficient": c, "condition": name, "vector_norm": norms[name]}
        point["kl"] = kls.get(name)
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
                point[f"{pre}moved"] = level.get("moved")
        points.append(point)
    return {q["condition"]: q for q in sorted(points, key=lambda q: q["coefficient"])}


def report_metrics(
    steer: list[dict[str, Any]],
    sweep: list[dict[str, Any]],
    scored: list[dict[str, Any]],
    p: StatsParams,
    coefficient_cells: int = 3,
    sweep_kl: list[dict[str, Any]] | None = None,
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
    prompted = [n for n in BASELINES if n in names]
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

    def steered_against(name: str) -> dict[str, Any]:
        """Steered against a baseline, paired by prompt as against control."""
        out: dict[str, Any] = {}
        for m in MEASURES:
            mine = condition_against_control(steer, "steered", vs[name][m], p, m, against=name)
            out[m] = {k: mine[k] for k in ("difference", "fisher_p", "prompt_level")}
        return out

    first = steer[0]
    kl = {r["condition"]: r.get("kl") for r in steer}
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
        "controls": {
            n: with_measures(n)
            for n in names
            if n != "steered" and "dose_" not in n and n not in prompted
        },
        # would a prompt have done as well? each baseline against control, and steered
        # against it (``steered_against``: steered minus the baseline)
        "baselines": {
            n: with_measures(n) | {"steered_against": steered_against(n)} for n in prompted
        },
        # KL(condition || plain) per token on neutral text (the steer stage's kl): what else
        # the vector changes
        "kl": {n: kl[n] for n in ["control", *names] if kl.get(n) is not None},
        "dose_response": dose_response(
            steer, {"control": control, **{n: vs[n] for n in names}}, first["coefficient"]
        ),
        "sweep": sweep_metrics(sweep, scored, coefficient_cells, sweep_kl),
    }


def plot_concluding_dose(
    dose: dict[str, dict[str, Any]], scale: str, layer: int, table: Path, figure: Path
) -> None:
    """The dose-response as a table (a DVC plot) and a figure: the raw, clean and degenerate
    rates against the coefficient, with intervals over prompts where there are two prompts or
    more (else Wilson's)."""
    points = sorted(dose.values(), key=lambda q: q["coefficient"])
    header = ["coefficient", "concluding_rate", "clean_rate", "degenerate_rate", "kl"]
    header += ["prompt_ci95_low", "prompt_ci95_high", "clean_prompt_ci95_low"]
    header += ["clean_prompt_ci95_high", "wilson_ci95_low", "wilson_ci95_high", "n", "condition"]
    rows = [
        [q["coefficient"], q["rate"], q["clean_rate"], q["degenerate_rate"], q.get("kl")]
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
    ax.legend(loc="upper left", fontsize=8)
    with_kl = [q for q in points if q.get("kl") is not None]
    if with_kl:  # what else the dose changes: KL on neutral text, on its own axis
        right = ax.twinx()
        right.plot(
            [q["coefficient"] for q in with_kl],
            [q["kl"] for q in with_kl],
            color="grey",
            linestyle="--",
            marker="x",
            label="KL on neutral text",
        )
        right.set_ylabel("KL(steered || plain), nats per token", fontsize=8)
        right.set_ylim(bottom=0)
        right.legend(loc="upper right", fontsize=8)
    save_png(fig, figure)


def plot_spread(steer: list[dict[str, Any]], measure: Measure, table: Path, figure: Path) -> None:
    """Each condition's per-prompt difference from control in the rate of ``measure``, as a
    table (condition, row, step, difference) and a figure: a dot per prompt, the mean as a
    bar, and the shares moved up / unchanged / down under each condition's name."""
    names = sorted({r["condition"] for r in steer} - {"control"})
    diffs = {n: prompt_differences(steer, n, measure) for n in names}
    rows = [[n, k[0], k[1], d] for n in names for k, d in diffs[n].items()]
    write_csv(["condition", "row", "step", "difference"], rows, table)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.8 * len(names)), 3.6))
    for x, n in enumerate(names):
        values = list(diffs[n].values())
        counts = Counter(values)
        seen: Counter[float] = Counter()
        for v in values:  # equal values side by side, so that each prompt shows
            offset = (seen[v] - (counts[v] - 1) / 2) * 0.06
            seen[v] += 1
            ax.plot(x + offset, v, "o", color="C0", markersize=3, alpha=0.7)
        if values:
            ax.hlines(mean(values), x - 0.3, x + 0.3, color="C3")
    labels = []
    for n in names:
        share = moved(list(diffs[n].values())) if diffs[n] else None
        shares = (
            "" if share is None else f"\n{share['up']:.0%}/{share['same']:.0%}/{share['down']:.0%}"
        )
        labels.append(n + shares)
    ax.set_xticks(range(len(names)), labels, fontsize=7, rotation=30)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel(f"{measure} rate minus control's, per prompt", fontsize=8)
    ax.set_title("per-prompt differences from control (red: mean; up/same/down)", fontsize=9)
    save_png(fig, figure)
