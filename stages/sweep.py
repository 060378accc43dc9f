"""Stage sweep: steered samples for every (layer, position, coefficient) choice of a grid.

    dvc repro sweep
    paths from dvc.yaml's cmd: --vectors --examples --generations
    reads `model`, `sampling`, `prepare.kinds`, `sweep`, `steer.scale`

Vector ``[layer, pos]`` at each of ``sweep.coefficients`` (in ``steer.scale``'s units) is added
at ``blocks.{layer}.hook_resid_pre`` on every position, prompt and generated tokens, for
``n_samples`` samples on each of the first ``n_prompts`` test prompts of the negative kind (the
steer stage reports on the others). All choices share batches (one vector per row).
Output: one row per sample, with its ``nll`` under the plain model; the judge stage scores it.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.hooks import Steer
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.prepare import PrepareParams, held_out
from steerpipe.steering.sampling import SamplingParams, sample_conditions
from steerpipe.steering.steer import SteerParams, cell_vector
from steerpipe.steering.sweep import SweepParams, check_cell
from steerpipe.storage import read_parquet, read_tensors, write_parquet

INPUTS = ("vectors", "examples")
OUTPUTS = ("generations",)


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(SweepParams)
    negative = load(PrepareParams).kinds[1]  # the kind the vector steers away from
    tensors, meta = read_tensors(paths["vectors"])
    cells = [(layer, pos) for layer in p.layers for pos in p.positions]
    for layer, pos in cells:
        check_cell(layer, pos, meta["layers"], meta["positions"], "sweep.layers/positions")
    prompts = held_out(read_parquet(paths["examples"]), negative, p.n_prompts)
    model, tok = load_from_params(load(ModelParams))
    scale = load(SteerParams).scale
    units = {cell: cell_vector(tensors, meta, *cell, scale)[0] for cell in cells}
    conditions = [
        ({"layer": layer, "position": pos, "coefficient": c}, Steer(layer, c * units[layer, pos]))
        for layer, pos in cells
        for c in p.coefficients
    ]
    records = sample_conditions(
        model,
        tok,
        conditions,
        prompts,
        n_samples=p.n_samples,
        sampling=load(SamplingParams),
        seed=p.seed,
    )
    write_parquet(records, paths["generations"])
    print(f"{len(records)} samples over {len(cells)} cells x {len(p.coefficients)} coefficients")


if __name__ == "__main__":
    run_stage(main)
