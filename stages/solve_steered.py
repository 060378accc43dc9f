"""Stage solve_steered: full solutions of the held-out problems with the vector.

    dvc repro solve_steered
    paths from dvc.yaml's cmd: --vectors --sweep --scores --kl --problems --solutions
    reads `model`, `solve` (generation, coefficients), `steer` (layer, position, scale),
    `sweep`

The vector is steer's: the cell ``steer.layer`` / ``steer.position`` (``auto``: the best sweep
choice by ``sweep.metric``), in ``steer.scale``'s units, at each of ``solve.coefficients``
(condition ``dose_<c>``), added on the prompt and every decoded token. A solution's noise is
that of the same problem and sample under control (``steerpipe/steering/solutions.py``), so
the two are paired. Output: one row per solution, as ``solve_control``'s, with the cell and
``vector_norm``.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.hooks import Steer
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.conditions import dose_name
from steerpipe.steering.solutions import Condition, SolveParams, solve
from steerpipe.steering.steer import SteerParams, steer_vector
from steerpipe.steering.sweep import SweepParams
from steerpipe.storage import read_parquet, read_tensors, write_parquet

INPUTS = ("vectors", "sweep", "scores", "kl", "problems")
OUTPUTS = ("solutions",)


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(SolveParams)
    steer_params = load(SteerParams)
    tensors, meta = read_tensors(paths["vectors"])
    layer, pos, _, unit, _ = steer_vector(
        tensors,
        meta,
        layer=steer_params.layer,
        position=steer_params.position,
        coefficient=steer_params.coefficient,
        scale=steer_params.scale,
        sweep=load(SweepParams),
        judged=read_parquet(paths["sweep"]),
        scores=read_parquet(paths["scores"]),
        kl=read_parquet(paths["kl"]),
    )
    problems = read_parquet(paths["problems"])
    model, tok = load_from_params(load(ModelParams))
    conditions = []
    for c in p.coefficients:
        vector = c * unit
        fields = {"condition": dose_name(c), "coefficient": c, "layer": layer, "position": pos}
        fields["vector_norm"] = round(float(vector.norm()), 4)
        conditions.append(Condition(fields, steer=Steer(layer, vector)))
    records = solve(model, tok, problems, p.generation, conditions)
    write_parquet(records, paths["solutions"])
    print(
        f"cell (layer {layer}, position {pos}, {steer_params.scale}); "
        f"coefficients {p.coefficients}: "
        f"{len(records)} solutions, {sum(r['finished'] for r in records)} ended before the limit"
    )


if __name__ == "__main__":
    run_stage(main)
