"""Replication of experiment A over seeds: queue the runs, then one table and a forest plot.

    python -m steerpipe.results.replication queue --seeds 1 2 3 4 5   # one queued run a seed
    dvc queue start -j 1 && dvc queue status                # run them (one at a time)
    python -m steerpipe.results.replication table --out replication   # table.md, forest.png

Each queued experiment sets every seed that decides experiment A's data, split and samples
(``SEEDS``) to the same value, so the experiments differ only in their draws. ``table`` reads
``dvc exp show --json --all-commits`` (or a saved copy, ``--json``), keeps every experiment
named ``<prefix>-...`` with a report, whichever commit it was run from, and writes one row per
experiment (the cell, the rates, the difference with its interval over prompts, the sign-flip
p) and the pooled difference: the mean over experiments with a 95% t interval over them,
which answers "how much does the effect depend on the draw"; and how often the sweep's choice
repeats (``choice_stability``), for the choice steer made and for each rule's best choice in
the reports: the most frequent cell's count, the most experiments whose cell is one cell or a
grid neighbour of it (the next layer or position in params.yaml's ``sweep`` lists), and the
most frequent layer's count. An experiment still running is left out. Not a stage: nothing
here is in dvc.yaml. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import yaml
from scipy.stats import t as student_t

# The seeds that decide experiment A's data (problems, traces), split and samples.
SEEDS = ("steps.problem_seed", "steps.seed", "prepare.seed", "sweep.seed", "steer.seed")


def report_path(dvc_yaml: Path = Path("dvc.yaml")) -> str:
    """The report stage's metrics file, as dvc.yaml declares it (paths live there only)."""
    metrics = yaml.safe_load(dvc_yaml.read_text())["stages"]["report"]["metrics"]
    first = metrics[0]
    return str(first if isinstance(first, str) else next(iter(first)))


def queue_commands(seeds: list[int], prefix: str = "seed") -> list[list[str]]:
    """One ``dvc exp run --queue`` per seed, named ``<prefix>-<seed>``, reaching the report."""
    commands = []
    for s in seeds:
        sets = [arg for key in SEEDS for arg in ("-S", f"{key}={s}")]
        commands.append(["dvc", "exp", "run", "--queue", "-n", f"{prefix}-{s}", *sets, "report"])
    return commands


def experiments(shown: Any, report: str, prefix: str | None = None) -> list[dict[str, Any]]:
    """Every experiment with metrics file ``report`` in ``dvc exp show --json`` (named
    ``<prefix>-...``, if given): the revisions under each commit's ``experiments`` (a commit's
    own row, such as the branch tip's, is not an experiment, though it has a report too)."""
    found: list[dict[str, Any]] = []
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                if data.get("rev") == "workspace":  # running: DVC shows the workspace's files
                    continue
                metrics = (data.get("metrics") or {}).get(report, {}).get("data")
                name = rev.get("name")
                if name and metrics and (prefix is None or name.startswith(f"{prefix}-")):
                    found.append({"name": name, "report": metrics})
    return sorted(found, key=lambda e: e["name"])


def row(experiment: dict[str, Any]) -> dict[str, Any]:
    """One experiment's effect: the difference with its interval over prompts, of the clean
    rate (the headline) where the report has it, else of the raw rate (reports before it)."""
    r = experiment["report"]
    block = r.get("clean", r)
    level = block.get("prompt_level", {})
    ci = level.get("difference", {})
    cell = r["cell"]
    return {
        "name": experiment["name"],
        "cell": f"{cell['layer']}/{cell['position']}/{cell['coefficient']:g}",
        "measure": "clean" if "clean" in r else "raw",
        "control": f"{block['control']['count']}/{block['control']['n']}",
        "steered": f"{block['steered']['count']}/{block['steered']['n']}",
        "difference": float(block["difference"]),
        "ci95_low": ci.get("ci95_low", math.nan),
        "ci95_high": ci.get("ci95_high", math.nan),
        "sign_flip_p": level.get("sign_flip_p", math.nan),
    }


# where each rule's choice is in a report: steer's own choice, then each rule's best (report
# ``sweep``), as ``results/sweep_report.sweep_metrics`` writes them
RULES = {
    "steered (the choice made)": ("cell",),
    "logprob_clean": ("sweep", "best_logprob_clean"),
    "clean": ("sweep", "best_clean"),
    "judged": ("sweep", "best_judged"),
    "logprob": ("sweep", "best_logprob"),
}


def rule_cells(reports: list[dict[str, Any]]) -> dict[str, list[tuple[int, int, float | None]]]:
    """Per rule of ``RULES``, each report's choice (layer, position, coefficient or None), for
    the rules that every report has."""
    out = {}
    for rule, path in RULES.items():
        found = []
        for r in reports:
            node: Any = r
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
            found.append((int(node["layer"]), int(node["position"]), node.get("coefficient")))
        else:
            out[rule] = found
    return out


def choice_stability(
    cells: list[tuple[int, int]], layers: list[int], positions: list[int]
) -> dict[str, Any]:
    """How often K experiments' cells (layer, position) repeat: the most frequent cell and
    its count (ties: the lowest cell), the cell whose grid neighbourhood (itself, the next
    layer either way in ``layers``, the next position either way in ``positions``) holds the
    most experiments, with that count, and the most frequent layer with its count."""

    def near(a: tuple[int, int], b: tuple[int, int]) -> bool:
        def step(x: int, y: int, grid: list[int]) -> int:
            if x in grid and y in grid:
                return abs(grid.index(x) - grid.index(y))
            return 0 if x == y else 2

        return step(a[0], b[0], layers) + step(a[1], b[1], positions) <= 1

    grid = sorted(set(cells))
    same = min(grid, key=lambda c: (-cells.count(c), c))
    around = min(grid, key=lambda c: (-sum(near(c, x) for x in cells), c))
    chosen_layers = [c[0] for c in cells]
    layer = min(set(chosen_layers), key=lambda x: (-chosen_layers.count(x), x))
    return {
        "k": len(cells),
        "distinct": len(grid),
        "modal": same,
        "modal_count": cells.count(same),
        "near": around,
        "near_count": sum(near(around, x) for x in cells),
        "layer": layer,
        "layer_count": chosen_layers.count(layer),
    }


def stability_markdown(
    reports: list[dict[str, Any]], layers: list[int], positions: list[int]
) -> str:
    """A table: per rule, the K choices and how often they repeat."""
    lines = [
        "| rule | choices (layer/position/coefficient) | same cell | same cell or a neighbour "
        "| same layer |",
        "|---|---|---|---|---|",
    ]
    for rule, found in rule_cells(reports).items():
        st = choice_stability([(c[0], c[1]) for c in found], layers, positions)
        shown = ", ".join(f"{c[0]}/{c[1]}" + ("" if c[2] is None else f"/{c[2]:g}") for c in found)
        lines.append(
            f"| {rule} | {shown} | {st['modal_count']} of {st['k']} "
            f"({st['modal'][0]}/{st['modal'][1]}) | {st['near_count']} of {st['k']} "
            f"(around {st['near'][0]}/{st['near'][1]}) | {st['layer_count']} of {st['k']} "
            f"({st['layer']}) |"
        )
    return "\n".join(lines) + "\n"


def pooled(differences: list[float]) -> dict[str, float]:
    """Mean of the experiments' differences with a 95% t interval over experiments."""
    k = len(differences)
    mean = sum(differences) / k
    if k < 2:
        return {"mean": mean, "ci95_low": math.nan, "ci95_high": math.nan, "sd": math.nan}
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (k - 1))
    half = float(student_t.ppf(0.975, k - 1)) * sd / math.sqrt(k)
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "sd": sd}


def markdown(rows: list[dict[str, Any]], pool: dict[str, float]) -> str:
    lines = [
        "| experiment | layer/position/coefficient | rate | control | steered | difference "
        "| 95% over prompts | sign-flip p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['cell']} | {r['measure']} | {r['control']} | {r['steered']} "
            f"| {r['difference']:+.3f} | {r['ci95_low']:+.3f} to {r['ci95_high']:+.3f} "
            f"| {r['sign_flip_p']:.2g} |"
        )
    lines.append(
        f"| pooled ({len(rows)} experiments) | | | | | {pool['mean']:+.3f} "
        f"| {pool['ci95_low']:+.3f} to {pool['ci95_high']:+.3f} (t, over experiments) | |"
    )
    return "\n".join(lines) + "\n"


def forest(rows: list[dict[str, Any]], pool: dict[str, float], path: Path) -> None:
    from steerpipe.plots import plt, save_png

    labels = [r["name"] for r in rows] + ["pooled"]
    mids = [r["difference"] for r in rows] + [pool["mean"]]
    lows = [r["ci95_low"] for r in rows] + [pool["ci95_low"]]
    highs = [r["ci95_high"] for r in rows] + [pool["ci95_high"]]
    ys = list(range(len(labels)))[::-1]
    fig, ax = plt.subplots(figsize=(6, 1 + 0.4 * len(labels)))
    for y, mid, lo, hi, label in zip(ys, mids, lows, highs, labels, strict=True):
        ax.plot([lo, hi], [y, y], color="black" if label == "pooled" else "tab:blue")
        ax.plot([mid], [y], "D" if label == "pooled" else "o", color="black")
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_yticks(ys, labels)
    ax.set_xlabel("steered - control concluding rate (95% interval)")
    save_png(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m steerpipe.results.replication")
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("queue", help="queue one experiment per seed")
    q.add_argument("--seeds", type=int, nargs="+", required=True)
    q.add_argument("--prefix", default="seed")
    q.add_argument("--print", action="store_true", help="only print the commands")
    t = sub.add_parser("table", help="the table and forest plot of the experiments")
    t.add_argument("--json", type=Path, help="a saved `dvc exp show --json` (default: run it)")
    t.add_argument("--out", type=Path, default=Path("replication"))
    t.add_argument("--prefix", default="seed", help="only experiments named <prefix>-...")
    args = parser.parse_args(argv)
    if args.command == "queue":
        for command in queue_commands(args.seeds, args.prefix):
            print(" ".join(command))
            if not args.print:
                subprocess.run(command, check=True)
        return
    text = (
        args.json.read_text()
        if args.json
        else subprocess.run(
            # every commit's experiments: a commit made after queueing leaves them behind it
            ["dvc", "exp", "show", "--json", "--all-commits"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    found = experiments(json.loads(text), report_path(), args.prefix)
    rows = [row(e) for e in found]
    if not rows:
        raise SystemExit("no experiment with a report: run the queued experiments first")
    pool = pooled([r["difference"] for r in rows])
    sweep = yaml.safe_load(Path("params.yaml").read_text())["sweep"]
    text = markdown(rows, pool) + "\nHow often the sweep's choice repeats:\n\n"
    text += stability_markdown([e["report"] for e in found], sweep["layers"], sweep["positions"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    forest(rows, pool, args.out / "forest.png")
    print(text, end="")


if __name__ == "__main__":
    main()
