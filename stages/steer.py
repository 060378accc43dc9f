"""Stage steer: samples on the negative-kind test prompts with and without the vector, beside
controls, doses and prompting baselines, and each vector's KL on neutral text.

    dvc repro steer
    paths from dvc.yaml's cmd: --vectors --examples --sweep --scores --kl --generations
    reads `model`, `sampling`, `prepare.kinds`, `steer`, `sweep`, `kl`

The choice is ``steer.layer`` / ``steer.position`` / ``steer.coefficient``; ``auto`` takes the
best sweep choice by ``sweep.metric`` (``steerpipe/steering/sweep.py``). When a part is
``auto``, the prompts are the held-out ones the sweep did not sample, so that the choice is not
scored on the prompts that made it. The conditions (``steerpipe/steering/steer.py``), in this
order: control (no vector), steered, the negated vector, ``steer.n_random`` random directions
of its norm, the doses (``dose_<c>``, each of ``steer.coefficients``), and the baselines
``instruction`` (the model asked to conclude) and ``prefill`` (the step begun with the positive
kind's usual opener). All share batches, in that order, so adding a condition leaves the
earlier ones' samples as they were. Output: one row per sample (``condition``; ``coefficient``;
``vector_norm``, the length of what was added, to 4 places; ``kl``, the condition's mean
KL(steered || plain) per token on ``kl``'s neutral text, ``steering/side_effects.py``: 0 for
control, null for the baselines, which add no vector).
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.divergence import KLParams, neutral_texts, next_token_kl
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.baselines import baseline_conditions, baselines
from steerpipe.steering.prepare import PrepareParams, held_out
from steerpipe.steering.sampling import SamplingParams, sample_conditions
from steerpipe.steering.steer import SteerParams, steer_vector, vector_conditions
from steerpipe.steering.sweep import SweepParams, steer_prompts
from steerpipe.storage import read_parquet, read_tensors, write_parquet

INPUTS = ("vectors", "examples", "sweep", "scores", "kl")
OUTPUTS = ("generations",)


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(SteerParams)
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
        kl=read_parquet(paths["kl"]),
    )
    n = None if p.n_prompts == "all" else p.n_prompts
    kinds = load(PrepareParams).kinds
    examples = read_parquet(paths["examples"])
    given = (p.layer, p.position, p.coefficient)
    prompts = steer_prompts(held_out(examples, kinds[1]), sweep.n_prompts, n, given)
    model, tok = load_from_params(load(ModelParams))
    cell = {"layer": layer, "position": pos, "coefficient": coef, "scale": p.scale}
    vectors = vector_conditions(cell, layer, coef, unit, p)
    kl_p = load(KLParams)
    texts = neutral_texts(tok, kl_p)
    steers = [steer for _, steer in vectors]
    kl = next_token_kl(model, texts, steers, batch_size=kl_p.batch_size)
    for (fields, _), value in zip(vectors, kl, strict=True):
        fields["kl"] = round(value, 4)
    prompted = baseline_conditions(cell | {"kl": None}, baselines(p, tok, examples, kinds[0]))
    conditions = [*vectors, *prompted]  # the baselines last: the vectors' samples stay as they were
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
        f"vector norm {coef * unit.norm():.3g}, the layer's mean residual norm {resid_norm:.3g}): "
        f"{len(records)} samples"
    )


if __name__ == "__main__":
    run_stage(main)
