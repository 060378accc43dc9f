"""Stage steer: samples on the negative-kind test prompts with and without the vector.

    dvc repro steer
    paths from dvc.yaml's cmd: --vectors --examples --sweep --scores --generations
    reads `model`, `sampling`, `prepare.kinds`, `steer`, `sweep.metric`

The cell is ``steer.layer`` / ``steer.position``; ``auto`` takes the best sweep cell by
``sweep.metric``: the highest judged concluding rate, or the highest logprob score of
``sweep_logprob`` (ties: lower layer, then lower position). Beside control (no
vector) and steered, the controls of ``controls``: the negated vector and ``steer.n_random``
random directions of the vector's norm at the same cell; then the doses, the vector at each
of ``steer.coefficients`` (``dose_<c>``; ``steer.scale: norm`` counts coefficients in the
layer's mean residual-stream norm). All conditions share batches, in that order, so adding
controls or doses leaves the earlier conditions' samples as they were. Output: one row per
sample (``condition``: control / steered / negated / random_k / dose_c; ``coefficient``;
``vector_norm``, the length of what was added, to 4 places).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from steerpipe.cells import SweepParams, best_cell, best_scored_cell, check_cell
from steerpipe.config import check, load, run_stage, stage_args
from steerpipe.controls import Scale, control_vectors, dose_coefficients, dose_name, unit_vector
from steerpipe.generation import SamplingParams, Steer, sample_conditions
from steerpipe.models import ModelParams, load_from_params
from steerpipe.prompts import PrepareParams, held_out
from steerpipe.storage import read_parquet, read_tensors, write_parquet

INPUTS = ("vectors", "examples", "sweep", "scores")
OUTPUTS = ("generations",)


@dataclass(frozen=True)
class SteerParams:
    SECTION: ClassVar[str] = "steer"
    layer: Literal["auto"] | int  # auto: the best judged sweep cell
    position: Literal["auto"] | int
    coefficient: float
    coefficients: list[float]  # the doses, beside 0 (control) and coefficient (steered)
    scale: Scale  # absolute: in the vector's length; norm: in the layer's mean resid norm
    n_prompts: Literal["all"] | int  # test prompts of the negative kind
    n_samples: int  # per prompt and condition
    n_random: int  # random directions of the vector's norm, as controls
    seed: int  # of the sampling and of the random directions

    def __post_init__(self) -> None:
        check(self.n_prompts == "all" or self.n_prompts >= 1, "steer.n_prompts", "all or >= 1")
        check(self.n_samples >= 1, "steer.n_samples", "at least 1")
        check(self.n_random >= 0, "steer.n_random", "at least 0")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(SteerParams)
    negative = load(PrepareParams).kinds[1]  # the kind the vector steers away from
    tensors, meta = read_tensors(paths["vectors"])
    if load(SweepParams).metric == "judged":
        auto = best_cell(read_parquet(paths["sweep"]))
    else:
        auto = best_scored_cell(read_parquet(paths["scores"]))
    layer = auto[0] if p.layer == "auto" else p.layer
    pos = auto[1] if p.position == "auto" else p.position
    check_cell(layer, pos, meta["layers"], meta["positions"], "steer.layer/position")
    resid_norm = meta["resid_norms"][meta["layers"].index(layer)]
    unit = unit_vector(tensors["vectors"][meta["layers"].index(layer), pos], p.scale, resid_norm)
    vec = p.coefficient * unit
    n = None if p.n_prompts == "all" else p.n_prompts
    prompts = held_out(read_parquet(paths["examples"]), negative, n)
    model, tok = load_from_params(load(ModelParams))
    cell = {"layer": layer, "position": pos, "coefficient": p.coefficient, "scale": p.scale}
    vectors: list[tuple[str, float, torch.Tensor | None]] = [
        ("control", p.coefficient, None),
        ("steered", p.coefficient, vec),
        *((name, p.coefficient, v) for name, v in control_vectors(vec, p.n_random, p.seed).items()),
        *((dose_name(c), c, c * unit) for c in dose_coefficients(p.coefficient, p.coefficients)),
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
        f"cell (layer {layer}, position {pos}, coefficient {p.coefficient} {p.scale}; "
        f"vector norm {vec.norm():.3g}, the layer's mean residual norm {resid_norm:.3g}): "
        f"{len(records)} samples"
    )


if __name__ == "__main__":
    run_stage(main)
