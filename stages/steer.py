"""Stage steer: samples on the negative-kind test prompts with and without the vector.

    dvc repro steer
    paths from dvc.yaml's cmd: --vectors --examples --sweep --generations
    reads `model`, `sampling`, `prepare.kinds`, `steer`

The cell is ``steer.layer`` / ``steer.position``; ``auto`` takes the sweep cell with the
highest judged concluding rate (ties: lower layer, then lower position). Beside control (no
vector) and steered, the controls of ``controls``: the negated vector and ``steer.n_random``
random directions of the vector's norm at the same cell. All conditions share batches; control
and steered come first, so adding controls leaves their samples as they were. Output: one row
per sample (``condition``: control / steered / negated / random_k).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from steerpipe.cells import best_cell, check_cell
from steerpipe.config import check, load, run_stage, stage_args
from steerpipe.controls import control_vectors
from steerpipe.generation import SamplingParams, Steer, sample_conditions
from steerpipe.models import ModelParams, load_from_params
from steerpipe.prompts import PrepareParams, held_out
from steerpipe.storage import read_parquet, read_tensors, write_parquet

INPUTS = ("vectors", "examples", "sweep")
OUTPUTS = ("generations",)


@dataclass(frozen=True)
class SteerParams:
    SECTION: ClassVar[str] = "steer"
    layer: Literal["auto"] | int  # auto: the best judged sweep cell
    position: Literal["auto"] | int
    coefficient: float
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
    auto = best_cell(read_parquet(paths["sweep"]))
    layer = auto[0] if p.layer == "auto" else p.layer
    pos = auto[1] if p.position == "auto" else p.position
    check_cell(layer, pos, meta["layers"], meta["positions"], "steer.layer/position")
    vec = p.coefficient * tensors["vectors"][meta["layers"].index(layer), pos]
    n = None if p.n_prompts == "all" else p.n_prompts
    prompts = held_out(read_parquet(paths["examples"]), negative, n)
    model, tok = load_from_params(load(ModelParams))
    cell = {"layer": layer, "position": pos, "coefficient": p.coefficient}
    conditions = [
        ({"condition": "control", **cell}, None),
        ({"condition": "steered", **cell}, Steer(layer, vec)),
    ]
    for name, control in control_vectors(vec, p.n_random, p.seed).items():
        conditions.append(({"condition": name, **cell}, Steer(layer, control)))
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
        f"cell (layer {layer}, position {pos}, coefficient {p.coefficient}): {len(records)} samples"
    )


if __name__ == "__main__":
    run_stage(main)
