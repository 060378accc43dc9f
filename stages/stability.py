"""Stage stability: would the model write each labelled step again from the trace before it?

    dvc repro stability
    paths from dvc.yaml's cmd: --steps --stability --metrics
    reads `model`, `steps` (the sampler, the labeller) and `stability`

For every step of ``stability.kinds`` in the steps data set, ``stability.n_samples`` openings
of ``stability.max_new_tokens`` tokens are sampled from the model's own trace up to the step,
with the steps' sampler, each draw keyed by (row, step, sample); the steps' labeller labels each
opening (the rule, or with ``steps.labeller: anthropic`` Claude, shown the trace's steps before
and the opening as the last), and the step's stability is the share labelled its kind
(``steerpipe/steering/stability.py``). ``prepare.min_stability`` filters on it. Outputs: one
row per step (its openings, their labels, its stability) and metrics: per kind, how many steps,
their mean stability and how many at each level.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.generated_steps import StepsParams
from steerpipe.steering.stability import (
    StabilityParams,
    regenerate,
    relabel_with_claude,
    stability_items,
    stability_summary,
)
from steerpipe.steering.steps import read_steps
from steerpipe.storage import write_json, write_parquet

INPUTS = ("steps",)
OUTPUTS = ("stability", "metrics")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(StabilityParams)
    sampler = load(StepsParams)
    rows, separator = read_steps(paths["steps"])
    model, tok = load_from_params(load(ModelParams))
    items = stability_items(rows, tok, p.kinds, separator=separator)
    print(f"{len(items)} steps of {p.kinds} x {p.n_samples} regenerations")
    records = regenerate(
        model, tok, items, n_samples=p.n_samples, max_new_tokens=p.max_new_tokens,
        temperature=sampler.temperature, top_p=sampler.top_p, seed=p.seed,
        batch_size=p.batch_size, pad_id=int(tok.pad_token_id),
    )  # fmt: skip
    claude = None
    if sampler.labeller == "anthropic":  # the same labeller as the steps' own labels
        claude = relabel_with_claude(records, rows, sampler.claude)
    metrics = {
        "labeller": sampler.labeller,
        **({"claude": claude} if claude else {}),
        "n_samples": p.n_samples,
        "kinds": stability_summary(records, p.n_samples),
    }
    write_parquet(records, paths["stability"])
    write_json(metrics, paths["metrics"])
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
