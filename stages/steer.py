"""Stage steer: samples on the negative-kind test prompts with and without the vector.

    dvc repro steer
    paths from dvc.yaml's cmd: --vectors --examples --sweep --scores --generations
    reads `model`, `sampling`, `prepare.kinds`, `steer`, `sweep`

The choice is ``steer.layer`` / ``steer.position`` / ``steer.coefficient``; ``auto`` takes the
best sweep choice by ``sweep.metric`` (``steerpipe/steering/sweep.py``): the highest clean
concluding rate, the highest raw one, or the highest logprob score of ``sweep_logprob`` (ties:
lower layer, position, coefficient). When a part is ``auto``, the prompts are the held-out ones
the sweep did not sample, so that the choice is not scored on the prompts that made it. Beside
control (no vector) and steered, the controls (``steerpipe/steering/steer.py``): the negated
vector and ``steer.n_random`` random directions of the vector's norm at the same cell; then the
doses, the vector at each of ``steer.coefficients`` (``dose_<c>``; ``steer.scale: norm`` counts
coefficients in the layer's mean residual-stream norm). All conditions share batches, in that
order, so adding controls or doses leaves the earlier conditions' samples as they were.
Output: one row per sample (``condition``: control / steered / negated / random_k / dose_c;
``coefficient``; ``vector_norm``, the length of what was added, to 4 places).
"""

from __future__ import annotations

import torch

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.hooks import Steer
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.prepare import PrepareParams, held_out
from steerpipe.steering.sampling import SamplingParams, sample_conditions
from steerpipe.steering.steer import (
    SteerParams,
    control_vectors,
    dose_coefficients,
    dose_name,
    steer_vector,
)
from steerpipe.steering.sweep import SweepParams, steer_prompts
from steerpipe.storage import read_parquet, read_tensors, write_parquet

INPUTS = ("vectors", "examples", "sweep", "scores")
OUTPUTS = ("generations",)


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(SteerParams)
    negative = load(PrepareParams).kinds[1]  # the kind the vector steers away from
    tensors, meta = read_tensors(paths["vectors"])
    sweep = load(SweepParams)
    layer, pos, coef, unit, resid_norm = steer_vector(
        tensors,
        meta,
        layer=p.layer,
        position=p.position,
        coefficient=p.coefficient,
        scale=p.scale,
        sweep=sweep,
        judged=read_parquet(paths["sweep"]),
        scores=read_parquet(paths["scores"]),
    )
    vec = coef * unit
    n = None if p.n_prompts == "all" else p.n_prompts
    examples = held_out(read_parquet(paths["examples"]), negative)
    prompts = steer_prompts(examples, sweep.n_prompts, n, (p.layer, p.position, p.coefficient))
    model, tok = load_from_params(load(ModelParams))
    cell = {"layer": layer, "position": pos, "coefficient": coef, "scale": p.scale}
    vectors: list[tuple[str, float, torch.Tensor | None]] = [
        ("control", coef, None),
        ("steered", coef, vec),
        *((name, coef, v) for name, v in control_vectors(vec, p.n_random, p.seed).items()),
        *((dose_name(c), c, c * unit) for c in dose_coefficients(coef, p.coefficients)),
    ]
    conditions = [
        (
            {**cell, "condition": name, "coefficient": c}
            | {"vector_norm": 0.0 if v is None else round(float(v.norm()), 4)},
            None if v is None else Steer(layer, v),
        )
        for name, c, v in vectors
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
    print(
        f"cell (layer {layer}, position {pos}, coefficient {coef} {p.scale}; "
        f"vector norm {vec.norm():.3g}, the layer's mean residual norm {resid_norm:.3g}): "
        f"{len(records)} samples"
    )


if __name__ == "__main__":
    run_stage(main)
