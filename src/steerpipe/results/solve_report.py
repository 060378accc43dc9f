"""Full solutions' report (stage ``solve_report``): accuracy and length against the coefficient.

- ``solutions_summary``: a condition's accuracy (Wilson interval, and one over problems from a
  bootstrap), unparsable answers, solutions that ended, degenerate solutions (and those that
  ran to the token limit: loops), mean lengths with an interval over problems, and the tokens
  before the first conclusion-like step.
- ``solutions_against_control``: a condition against control on the same problems and samples
  (paired: the same noise): the accuracy difference with an interval over problems, a
  sign-flip test of the per-problem differences and McNemar's exact test on the solutions;
  the same for the length.
- ``solve_metrics``: both for every condition, keyed by condition, and each dose against the
  instruction baseline (the model asked to be brief); ``plot_solution_dose``: the conditions
  as a table (a DVC plot) and a figure.
- ``accuracy_power``: the solutions a condition needs to detect a change of control's
  accuracy (15 points by default) up or down, beside the number it has.
"""

from __future__ import annotations

import math
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
    pooled_rate,
    rate_summary,
    sign_flip_p,
    two_proportion_n,
)


def per_problem(rows: list[dict[str, Any]], key: str) -> dict[int, list[float]]:
    """Each problem's values of ``key``, one per solution."""
    out: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        out[r["problem"]].append(float(r[key]))
    return out


def solutions_summary(rows: list[dict[str, Any]], p: StatsParams) -> dict[str, Any]:
    """A condition's accuracy and lengths, with intervals over problems."""
    kw = {"seed": p.seed, "n_resamples": p.n_resamples}
    correct, tokens = per_problem(rows, "correct"), per_problem(rows, "n_tokens")
    concluding = [r["conclusion_tokens"] for r in rows if r["conclusion_tokens"] is not None]
    out: dict[str, Any] = {
        "coefficient": rows[0]["coefficient"],
        "vector_norm": rows[0]["vector_norm"],
        "accuracy": rate_summary(sum(r["correct"] for r in rows), len(rows)),
        "unparsable": sum(r["answer"] is None for r in rows),
        "finished": sum(r["finished"] for r in rows),
        # steering that breaks the text: degenerate, and looping until the token limit
        "degenerate": sum(r["degenerate"] for r in rows),
        "degenerate_to_limit": sum(r["degenerate"] and not r["finished"] for r in rows),
        "mean_tokens": float(np.mean([r["n_tokens"] for r in rows])),
        "with_conclusion": len(concluding),
        "mean_tokens_to_conclusion": float(np.mean(concluding)) if concluding else None,
        "mean_verification_steps": float(np.mean([r["verification_steps"] for r in rows])),
    }
    if len(correct) >= 2:
        hits = [sum(v) for v in correct.values()]
        totals = [len(v) for v in correct.values()]
        lo, hi = cluster_ci(pooled_rate, (hits, totals), **kw)
        out["accuracy"] |= {"problem_ci95_low": lo, "problem_ci95_high": hi}
        lo, hi = cluster_ci(mean_statistic, ([float(np.mean(v)) for v in tokens.values()],), **kw)
        out["tokens_ci95_low"], out["tokens_ci95_high"] = lo, hi
    return out


def solutions_against_control(
    rows: list[dict[str, Any]], control: list[dict[str, Any]], p: StatsParams
) -> dict[str, Any]:
    """A condition against control on the same problems and samples."""
    kw = {"seed": p.seed, "n_resamples": p.n_resamples}
    base = {(r["problem"], r["sample"]): r for r in control}
    only_mine = sum(r["correct"] and not base[r["problem"], r["sample"]]["correct"] for r in rows)
    only_base = sum(base[r["problem"], r["sample"]]["correct"] and not r["correct"] for r in rows)
    mine, theirs = per_problem(rows, "correct"), per_problem(control, "correct")
    problems = sorted(mine)
    acc = [float(np.mean(mine[k]) - np.mean(theirs[k])) for k in problems]
    mine_t, theirs_t = per_problem(rows, "n_tokens"), per_problem(control, "n_tokens")
    tok = [float(np.mean(mine_t[k]) - np.mean(theirs_t[k])) for k in problems]
    rate = np.mean([r["correct"] for r in rows]) - np.mean([r["correct"] for r in control])
    out: dict[str, Any] = {
        "accuracy_difference": float(rate),
        "right_under_control_only": only_base,
        "right_under_condition_only": only_mine,
        "mcnemar_p": mcnemar_p(only_mine, only_base),
        "tokens_difference": float(np.mean(tok)),
    }
    if len(problems) >= 2:
        columns = [[f(v[k]) for k in problems] for v in (mine, theirs) for f in (sum, len)]
        lo, hi = cluster_ci(pooled_difference, columns, **kw)
        out["accuracy_ci95_low"], out["accuracy_ci95_high"] = lo, hi
        out["accuracy_sign_flip_p"] = sign_flip_p(acc, **kw)
        out["tokens_ci95_low"], out["tokens_ci95_high"] = cluster_ci(mean_statistic, (tok,), **kw)
        out["tokens_sign_flip_p"] = sign_flip_p(tok, **kw)
    return out


def solve_metrics(rows: list[dict[str, Any]], p: StatsParams) -> dict[str, dict[str, Any]]:
    """Per condition of the scored solutions: its summary, and for every condition but control
    its comparison with control (``against_control``); where the instruction baseline ran,
    each steered condition's comparison with it too (``against_instruction``: the same
    pairing, the baseline in control's place)."""
    by_condition: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_condition[r["condition"]].append(r)
    control = by_condition["control"]
    conditions = {name: solutions_summary(group, p) for name, group in by_condition.items()}
    for name, group in by_condition.items():
        if name != "control":
            conditions[name]["against_control"] = solutions_against_control(group, control, p)
        if name.startswith("dose_") and "instruction" in by_condition:
            baseline = by_condition["instruction"]
            conditions[name]["against_instruction"] = solutions_against_control(group, baseline, p)
    return conditions


def accuracy_power(
    rate: float, n: int, *, change: float = 0.15, alpha: float = 0.05, power: float = 0.8
) -> dict[str, Any]:
    """Solutions per condition that detect control's accuracy ``rate`` moving ``change`` down
    or up (two-sided, ``alpha``, ``power``; ``stats.two_proportion_n``, unpaired and so an
    upper bound for the paired design), and whether ``n`` reaches both. None where the moved
    rate leaves (0, 1): accuracy at a floor or ceiling cannot show a change that way."""

    def needed(target: float) -> int | None:
        if not (0 < rate < 1 and 0 < target < 1):
            return None
        return math.ceil(two_proportion_n(rate, target, alpha=alpha, power=power))

    down, up = needed(rate - change), needed(rate + change)
    return {
        "control_rate": rate,
        "change": change,
        "n": n,
        "n_needed_down": down,
        "n_needed_up": up,
        "detects_both": down is not None and up is not None and n >= max(down, up),
    }


def plot_solution_dose(conditions: dict[str, dict[str, Any]], table: Path, figure: Path) -> None:
    """Accuracy and mean length against the coefficient, with their intervals over problems,
    as a table (a DVC plot) and a figure of two panels; the instruction baseline, which is no
    point of the coefficient's axis, as a dashed line across each panel."""
    on_axis = {k: q for k, q in conditions.items() if k != "instruction"}
    points = sorted(on_axis.values(), key=lambda q: q["coefficient"])
    header = ["coefficient", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high"]
    header += ["mean_tokens", "tokens_ci95_low", "tokens_ci95_high", "n"]
    rows = []
    for q in points:
        a = q["accuracy"]
        rows.append(
            [q["coefficient"], a["rate"], a.get("problem_ci95_low"), a.get("problem_ci95_high")]
            + [q["mean_tokens"], q.get("tokens_ci95_low"), q.get("tokens_ci95_high"), a["n"]]
        )
    write_csv(header, rows, table)
    x = [r[0] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (y, lo, hi), label in zip(
        axes, ((1, 2, 3), (4, 5, 6)), ("accuracy", "mean tokens"), strict=True
    ):
        err = [
            [r[y] - r[lo] if r[lo] is not None else 0.0 for r in rows],
            [r[hi] - r[y] if r[hi] is not None else 0.0 for r in rows],
        ]
        ax.errorbar(x, [r[y] for r in rows], yerr=err, marker="o", capsize=3)
        if "instruction" in conditions:
            q = conditions["instruction"]
            level = q["accuracy"]["rate"] if y == 1 else q["mean_tokens"]
            ax.axhline(level, color="grey", linestyle="--", label="instruction baseline")
            ax.legend(loc="best", fontsize=8)
        ax.set_xlabel("coefficient (0: control)")
        ax.set_ylabel(label)
    axes[0].set_ylim(0, 1)
    fig.suptitle("full solutions against the steering coefficient; 95% intervals over problems")
    save_png(fig, figure)
