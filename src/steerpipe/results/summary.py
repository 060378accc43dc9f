"""The headline results of both experiments in a few lines, read from the metrics files.

    python -m steerpipe.results.summary        # what scripts/pipeline.sh prints last

``dvc metrics show`` lists every metric of every stage (about 200 columns); this prints what
the docs report: experiment A's concluding rates with their intervals, beside the prompting
baselines, with each vector's KL on neutral text and the share of prompts each condition
moved; and experiment B's accuracy per neuron set and strength, with how many answers each
changed.
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
        "| condition | clean | concluding (raw) | degenerate | clean rate, 95% interval (Wilson) "
        "| prompts moved up / same / down (clean) | KL on neutral text |",
        "|---|---|---|---|---|---|---|",
    ]
    steered = clean["steered"] | {"prompt_level": clean["prompt_level"]}
    rows = [
        ("control", clean["control"], report["control"], degenerate["control"]),
        ("steered", steered, report["steered"], degenerate["steered"]),
    ]
    baselines = report.get("baselines", {})
    for name, c in report.get("controls", {}).items():  # the negated vector, random directions
        rows.append((name, c["clean"], c, c["degenerate"]))
    for name, c in baselines.items():
        rows.append((f"{name} (baseline)", c["clean"], c, c["degenerate"]))
    doses = [q for name, q in report.get("dose_response", {}).items() if name.startswith("dose_")]
    for q in sorted(doses, key=lambda q: q["coefficient"]):
        by = {
            m: {k: q[f"{m}_{k}"] for k in ("count", "n", "rate")} for m in ("clean", "degenerate")
        }
        name = f"x{q['coefficient']:g} (dose)"
        level = {"prompt_level": {"moved": q.get("clean_moved")}}
        rows.append((name, by["clean"] | _wilson(q, "clean_") | level, q, by["degenerate"]))
    kl = report.get("kl", {})
    for name, c, raw, d in rows:
        share = c.get("prompt_level", {}).get("moved")
        moved = (
            "" if not share else f"{share['up']:.2f} / {share['same']:.2f} / {share['down']:.2f}"
        )
        condition = name.split(" (")[0]
        if condition.startswith("x"):
            condition = f"dose_{float(condition[1:])}"
        divergence = kl.get(condition)
        lines.append(
            f"| {name} | {c['count']}/{c['n']} | {raw['count']}/{raw['n']} | "
            f"{d['count']}/{d['n']} | {c['rate']:.3f} "
            f"({c['ci95_low']:.3f} - {c['ci95_high']:.3f}) | {moved} | "
            + ("" if divergence is None else f"{divergence:.3f}")
            + " |"
        )
    for label, block in (("Clean", clean), ("Raw", report), ("Degenerate", degenerate)):
        lines.append(_comparison(f"{label}: steered - control", block))
    for name, c in baselines.items():  # would a prompt have done as well?
        lines.append(
            _comparison(f"Clean: steered - {name} baseline", c["steered_against"]["clean"])
        )
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


def _comparison(label: str, block: dict[str, Any]) -> str:
    """A paired comparison's line: the difference, its interval and sign-flip test over prompts
    where there are, and Fisher's test per sample."""
    line, level = f"{label} {block['difference']:+.3f}", block.get("prompt_level", {})
    if "difference" in level:
        d = level["difference"]
        line += (
            f", 95% interval {d['ci95_low']:+.3f} to {d['ci95_high']:+.3f} over "
            f"{level['prompts']} prompts, sign-flip p = {level['sign_flip_p']:.2g}"
        )
    return line + f"; per sample, Fisher p = {block['fisher_p']:.2g}"


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
        "| sign-flip p | mean absolute change | KL on neutral text |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in report["conditions"].items():
        acc = c["accuracy"]
        change = c.get("paired_with_base", {}).get("margin_change")
        margin = " |  | " if change is None else (
            f"{change['mean']:+.3f} ({change['ci95_low']:+.3f} to {change['ci95_high']:+.3f}) "
            f"| {change['sign_flip_p']:.2g} | {change['mean_abs']:.3f}"
        )  # fmt: skip
        rate, kl = c["answer_changed_rate"], c.get("kl")
        divergence = "" if kl is None else f"{kl:.4f}"
        lines.append(
            f"| {name} | {acc['count']}/{acc['n']} | {rate:.3f} | {margin} | {divergence} |"
        )
    return lines


def side_effects(report: dict[str, Any]) -> list[str]:
    """The vector's effect on a task it was not made for: experiment B's questions."""
    c, change = report["cell"], report["margin_change"]
    return [
        f"Side effect on experiment B's {report['questions']} Yes/No questions "
        f"({report['style']} prompt) of the vector at layer {c['layer']}, position "
        f"{c['position']}, coefficient {c['coefficient']:g}: answer margin "
        f"{change['mean']:+.3f} (95% over questions {change['ci95_low']:+.3f} to "
        f"{change['ci95_high']:+.3f}, sign-flip p = {change['sign_flip_p']:.2g}; mean absolute "
        f"change {change['mean_abs']:.3f}); accuracy {report['accuracy_plain']:.3f} -> "
        f"{report['accuracy_steered']:.3f} (McNemar p = {report['mcnemar_p']:.2g})"
        + "".join(
            f"; on the {word.capitalize()} questions {value:+.3f}"
            for word, value in report.get("margin_change_by_answer", {}).items()
        )
    ]


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
    named = sorted(report["conditions"].items(), key=lambda kv: (kv[1]["coefficient"], kv[0]))
    for name, c in named:
        acc, vs = c["accuracy"], c.get("against_control")
        versus = "" if vs is None else (
            f"{vs['accuracy_difference']:+.3f} (McNemar p = {vs['mcnemar_p']:.2g}), "
            f"{vs['tokens_difference']:+.1f}"
        )  # fmt: skip
        label = f"{c['coefficient']:g}" if name != "instruction" else "instruction (baseline)"
        lines.append(
            f"| {label} | {acc['count']}/{acc['n']} | {c['mean_tokens']:.1f} | "
            f"{c['with_conclusion']}/{acc['n']} | {c['degenerate']} ({c['degenerate_to_limit']}) "
            f"| {versus} |"
        )
    for _, c in named:  # would asking have done what the vector does?
        vs = c.get("against_instruction")
        if vs:
            lines.append(
                f"x{c['coefficient']:g} against the instruction baseline: accuracy "
                f"{vs['accuracy_difference']:+.3f} (McNemar p = {vs['mcnemar_p']:.2g}), tokens "
                f"{vs['tokens_difference']:+.1f}"
            )
    return lines


def summary(data: Path = Path("data")) -> str:
    lines: list[str] = []
    report = _read(data / "report" / "metrics.json")
    if report:
        lines += experiment_a(report) + [""]
    effects = _read(data / "side_effects" / "metrics.json")
    if effects:
        lines += side_effects(effects) + [""]
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
