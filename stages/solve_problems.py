"""Stage solve_problems: the held-out problems that the solve stages solve in full.

    dvc repro solve_problems
    paths from dvc.yaml's cmd: --steps --problems --metrics
    reads `solve.problems`

``solve.problems.source: gym`` draws instances of a reasoning-gym task (``task``: by default the
steps data set's; its own seed); a hub id or a local Parquet file gives problems with answers.
Problems whose text is in the steps data set are left out (``steerpipe/steering/solutions.py``).
Outputs: one row per problem (``index``, ``problem``, ``answer``, ``entry``) and metrics.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.steering.solutions import SolveParams, load_problems
from steerpipe.steering.steps import read_steps
from steerpipe.storage import write_json, write_parquet

INPUTS = ("steps",)
OUTPUTS = ("problems", "metrics")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(SolveParams).problems
    rows, _ = read_steps(paths["steps"])
    problems = load_problems(p, seen=[r["problem"] for r in rows])
    write_parquet(problems, paths["problems"])
    metrics = {"source": p.source, "problems": len(problems)}
    write_json(metrics, paths["metrics"])
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
