"""The headline results of both experiments in a few lines, read from the metrics files.

    python -m steerpipe.results.summary        # what scripts/pipeline.sh prints last

``dvc metrics show`` lists every metric of every stage (about 200 columns); this prints what
the docs report: experiment A's concluding rates with their intervals, and experiment B's
accuracy per neuron set and strength, with how many answers each changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def experiment_a(report: dict[str, Any]) -> list[str]:
    cell = report["cell"]
    clean, degenerate = report["clean"], report["degenerate"]
    lines = [
        f"Experiment A: steering at layer {cell['layer']}, position {cell['position']}, "
        f"coefficient {cell['coefficient']:g} (rule judge: it reads the opening; clean = "
        "concluding and not degenerate)",
        "",
        "| condition | clean | concluding (raw) | degenerate | clean rate, 95% interval (Wilson) |",
        "|---|---|---|---|---|",
    ]
    rows = [
        ("control", clean["control"], report["control"], degenerate["control"]),
        ("steered", clean["steered"], report["steered"], degenerate["steered"]),
    ]
    for name, c in report.get("controls", {}).items():  # the negated vector, random directions
        rows.append((name, c["clean"], c, c["degenerate"]))
    doses = [q for name, q in report.get("dose_response", {}).items() if name.startswith("dose_")]
    for q in sorted(doses, key=lambda q: q["coefficient"]):
        by = {
            m: {k: q[f"{m}_{k}"] for k in ("count", "n", "rate")} for m in ("clean", "degenerate")
        }
        name = f"x{q['coefficient']:g} (dose)"
        rows.append((name, by["clean"] | _wilson(q, "clean_"), q, by["degenerate"]))
    for name, c, raw, d in rows:
        lines.append(
            f"| {name} | {c['count']}/{c['n']} | {raw['count']}/{raw['n']} | "
            f"{d['count']}/{d['n']} | {c['rate']:.3f} "
            f"({c['ci95_low']:.3f} - {c['ci95_high']:.3f}) |"
        )
    for label, block in (("Clean", clean), ("Raw", report), ("Degenerate", degenerate)):
        level = block.get("prompt_level", {})
        line = f"{label}: steered - control {block['difference']:+.3f}"
        if "difference" in level:
            d = level["difference"]
            line += (
                f", 95% interval {d['ci95_low']:+.3f} to {d['ci95_high']:+.3f} over "
                f"{level['prompts']} prompts, sign-flip p = {level['sign_flip_p']:.2g}"
            )
        lines.append(line + f"; per sample, Fisher p = {block['fisher_p']:.2g}")
    sweep = report.get("sweep", {})
    if "best_clean" in sweep:
        b, r, lp = sweep["best_clean"], sweep["best_judged"], sweep["best_logprob"]
        rho = sweep["rank_correlation"]["spearman"]
        pooled = sweep.get("best_logprob_clean")
        if pooled:
            lines.append(
                f"Sweep choice (logprob score, then the clean rate of the best cells pooled): "
                f"layer {pooled['layer']}, position {pooled['position']}, coefficient "
                f"{pooled['coefficient']:g} ({pooled['pooled_rate']:.2f} clean over "
                f"{pooled['pooled_samples']} samples)"
            )
        lines.append(
            f"Sweep ({sweep['samples']} samples): the clean rate picks layer {b['layer']}, "
            f"position {b['position']}, coefficient {b['coefficient']:g}; the raw rate layer "
            f"{r['layer']}, position {r['position']}, coefficient {r['coefficient']:g}; the "
            f"logprob score layer {lp['layer']}, position {lp['position']}; Spearman's rho of "
            "raw and logprob over the grid " + ("undefined" if rho is None else f"{rho:+.2f}")
        )
    return lines


def _wilson(q: dict[str, Any], pre: str) -> dict[str, Any]:
    return {"ci95_low": q[f"{pre}ci95_low"], "ci95_high": q[f"{pre}ci95_high"]}


def experiment_b(report: dict[str, Any], neurons: dict[str, Any] | None) -> list[str]:
    head = "Experiment B: Yes/No accuracy and answer margins with neuron sets scaled"
    if neurons:
        sets = [f"layer {k.split('_')[-1]}: {v['reasoning']} reasoning, {v['memory']} memory"
                for k, v in neurons.items() if k.startswith("layer_")]  # fmt: skip
        head += f" ({'; '.join(sets)})"
    lines = [head]
    if "majority_baseline" in report:
        base = report["conditions"]["base"]
        lines.append(
            f"Base accuracy {base['accuracy']['rate']:.3f} (balanced "
            f"{base['balanced_accuracy']:.3f}); always giving the more frequent answer scores "
            f"{report['majority_baseline']:.3f} ({report['yes_rate']:.0%} of the answers are Yes)"
        )
    lines += [
        "",
        "| condition | accurate | answers changed | margin change vs base (95% over questions) "
        "| sign-flip p | mean absolute change |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in report["conditions"].items():
        acc = c["accuracy"]
        change = c.get("paired_with_base", {}).get("margin_change")
        margin = " |  | " if change is None else (
            f"{change['mean']:+.3f} ({change['ci95_low']:+.3f} to {change['ci95_high']:+.3f}) "
            f"| {change['sign_flip_p']:.2g} | {change['mean_abs']:.3f}"
        )  # fmt: skip
        rate = c["answer_changed_rate"]
        lines.append(f"| {name} | {acc['count']}/{acc['n']} | {rate:.3f} | {margin} |")
    return lines


def full_solutions(report: dict[str, Any]) -> list[str]:
    cell = report["cell"]
    lines = [
        f"Full solutions: {report['problems']} held-out problems x {report['samples']} samples, "
        f"up to {report['max_new_tokens']} tokens, the vector at layer {cell['layer']}, "
        f"position {cell['position']}",
        "",
        "| coefficient | right | mean tokens | with a conclusion | degenerate (to the limit) "
        "| vs control: accuracy, tokens |",
        "|---|---|---|---|---|---|",
    ]
    for c in sorted(report["conditions"].values(), key=lambda c: c["coefficient"]):
        acc, vs = c["accuracy"], c.get("against_control")
        versus = "" if vs is None else (
            f"{vs['accuracy_difference']:+.3f} (McNemar p = {vs['mcnemar_p']:.2g}), "
            f"{vs['tokens_difference']:+.1f}"
        )  # fmt: skip
        lines.append(
            f"| {c['coefficient']:g} | {acc['count']}/{acc['n']} | {c['mean_tokens']:.1f} | "
            f"{c['with_conclusion']}/{acc['n']} | {c['degenerate']} ({c['degenerate_to_limit']}) "
            f"| {versus} |"
        )
    return lines


def summary(data: Path = Path("data")) -> str:
    lines: list[str] = []
    report = _read(data / "report" / "metrics.json")
    if report:
        lines += experiment_a(report) + [""]
    solved = _read(data / "solve_report" / "metrics.json")
    if solved:
        lines += full_solutions(solved) + [""]
    neuron_report = _read(data / "neuron_report" / "metrics.json")
    if neuron_report:
        lines += experiment_b(neuron_report, _read(data / "neurons" / "metrics.json")) + [""]
    if not lines:
        return f"no results under {data}/ yet: run dvc repro"
    lines.append(
        "Details: docs/experiment-a.md, docs/experiment-b.md; all metrics: dvc metrics show"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("data")))
