"""Stage solve_control: full solutions of the held-out problems without the vector, and the
instruction baseline's.

    dvc repro solve_control
    paths from dvc.yaml's cmd: --problems --solutions
    reads `model`, `solve.generation` and `solve.baseline_instruction` (not the coefficients:
    changing those leaves it cached)

Each problem is solved ``n_samples`` times, up to ``max_new_tokens`` tokens, in batches with
the KV cache (``steerpipe/steering/solutions.py``): as asked (control), and with
``solve.baseline_instruction`` after the problem (``instruction``: would asking do what the
vector does?), with the same noise. Output: one row per solution (``condition``, ``coefficient``
0, ``problem``, ``sample``, ``ids``, ``text``, ``n_tokens``, ``finished``); ``solve_report``
scores it.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.solutions import Condition, SolveParams, solve
from steerpipe.storage import read_parquet, write_parquet

INPUTS = ("problems",)
OUTPUTS = ("solutions",)


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    solving = load(SolveParams)
    p, ask = solving.generation, solving.baseline_instruction
    problems = read_parquet(paths["problems"])
    model, tok = load_from_params(load(ModelParams))
    fields = {"condition": "control", "coefficient": 0.0, "vector_norm": 0.0}
    conditions = [Condition(fields)]
    if ask is not None:
        conditions.append(Condition(fields | {"condition": "instruction"}, ask=ask))
    records = solve(model, tok, problems, p, conditions)
    write_parquet(records, paths["solutions"])
    for name in sorted({r["condition"] for r in records}):
        mine = [r for r in records if r["condition"] == name]
        finished = sum(r["finished"] for r in mine)
        print(f"{name}: {len(mine)} solutions, {finished} ended before the token limit")


if __name__ == "__main__":
    run_stage(main)
