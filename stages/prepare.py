"""Stage prepare: rebuild each labelled step's prompt, tokenise, filter, split train/test.

    dvc repro prepare
    paths from dvc.yaml's cmd: --steps --examples --metrics
    reads `model.name` and `prepare`

One step per problem and kind (``prepare.kinds``: the positive kind first, then the negative),
drawn with a seeded generator, its prompt rebuilt as ``prepare.reconstruction`` says
(``trace``: the model's own tokens up to the step; ``original``: the notebook's rule; see
``steerpipe/steering/prepare.py``); steps shorter than ``min_step_tokens`` or prompts longer than
``max_prompt_tokens`` are dropped; the first ``test_size`` of the negative kind (the sweep's and
steer's prompts) and ``positive_test_size`` of the positive kind are the test set.
With ``prepare.min_stability``, a kind that the stability stage measured draws only among
steps at least that stable (``steerpipe/steering/stability.py``).
"""

from __future__ import annotations

from steerpipe.config import StageError, load, run_stage, stage_args
from steerpipe.lm.models import ModelParams, load_tokenizer
from steerpipe.steering.prepare import PrepareParams, select_examples, stable_steps, steps_of_kind
from steerpipe.steering.steps import read_steps
from steerpipe.storage import read_parquet, write_json, write_parquet

INPUTS = ("steps", "stability")
OUTPUTS = ("examples", "metrics")


def too_few(
    kind: str, left: int, labelled: int, problems: int, dropped: dict[str, int], p: PrepareParams
) -> str:
    """Why a kind has too few examples: the labeller's count first, then each filter's."""
    size = "positive_test_size" if kind == p.kinds[0] else "test_size"
    unstable = dropped.get("min_stability")
    return (
        f"only {left} '{kind}' examples are left, and prepare.{size}={p.n_test(kind)} needs "
        f"more than {p.n_test(kind)}. The labeller found '{kind}' steps in {labelled} of "
        f"{problems} problems (the steps stage; more come from steps.n_problems, a longer "
        "steps.max_new_tokens, an instruction that asks for them, or steps.labeller=anthropic). "
        + (
            ""
            if unstable is None
            else f"{unstable} of them had no step at least "
            f"prepare.min_stability={p.min_stability} stable (the stability stage). "
        )
        + f"Of those drawn, {dropped['min_step_tokens']} had a step shorter than "
        f"prepare.min_step_tokens={p.min_step_tokens} and {dropped['max_prompt_tokens']} a "
        f"prompt longer than prepare.max_prompt_tokens={p.max_prompt_tokens}."
    )


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(PrepareParams)
    rows, separator = read_steps(paths["steps"])
    tok = load_tokenizer(load(ModelParams).name)
    stability = read_parquet(paths["stability"])
    measured = {rec["kind"] for rec in stability}
    stable = None if p.min_stability is None else stable_steps(stability, p.min_stability)
    examples, metrics = [], {}
    for kind in p.kinds:
        allowed = None if stable is None or kind not in measured else stable.get(kind, set())
        chosen, dropped = select_examples(
            rows,
            tok,
            kind,
            separator=separator,
            reconstruction=p.reconstruction,
            seed=p.seed,
            min_step_tokens=p.min_step_tokens,
            max_prompt_tokens=p.max_prompt_tokens,
            allowed=allowed,
        )
        labelled = sum(bool(steps_of_kind(r, kind)) for r in rows)
        n_test = p.n_test(kind)
        if len(chosen) <= n_test:
            raise StageError(too_few(kind, len(chosen), labelled, len(rows), dropped, p))
        for i, ex in enumerate(chosen):
            ex["split"] = "test" if i < n_test else "train"
        examples += chosen
        metrics[kind] = {
            "problems_labelled": labelled,
            "dropped": dropped,
            "test": n_test,
            "train": len(chosen) - n_test,
        }
    write_parquet(examples, paths["examples"])
    write_json(metrics, paths["metrics"])
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
