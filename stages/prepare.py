"""Stage prepare: rebuild each labelled step's prompt, tokenise, filter, split train/test.

    dvc repro prepare
    paths from dvc.yaml's cmd: --steps --examples --metrics
    reads `model.name` and `prepare`

One step per problem and kind (``prepare.kinds``: the positive kind first, then the negative),
drawn with a seeded generator; steps shorter than ``min_step_tokens`` or prompts longer than
``max_prompt_tokens`` are dropped; the first ``test_size`` of each kind are the test set.
"""

from __future__ import annotations

from steerpipe.config import StageError, load, run_stage, stage_args
from steerpipe.models import ModelParams, load_tokenizer
from steerpipe.prompts import PrepareParams, select_examples
from steerpipe.steps import validate_rows
from steerpipe.storage import read_parquet, write_json, write_parquet

INPUTS = ("steps",)
OUTPUTS = ("examples", "metrics")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(PrepareParams)
    rows = read_parquet(paths["steps"])
    validate_rows(rows)
    tok = load_tokenizer(load(ModelParams).name)
    examples, metrics = [], {}
    for kind in p.kinds:
        chosen = select_examples(
            rows,
            tok,
            kind,
            seed=p.seed,
            min_step_tokens=p.min_step_tokens,
            max_prompt_tokens=p.max_prompt_tokens,
        )
        if len(chosen) <= p.test_size:
            raise StageError(
                f"only {len(chosen)} '{kind}' examples are left after filtering "
                f"(prepare.min_step_tokens={p.min_step_tokens}, "
                f"prepare.max_prompt_tokens={p.max_prompt_tokens}); prepare.test_size="
                f"{p.test_size} needs more to leave a training set"
            )
        for i, ex in enumerate(chosen):
            ex["split"] = "test" if i < p.test_size else "train"
        examples += chosen
        metrics[kind] = {"test": p.test_size, "train": len(chosen) - p.test_size}
    write_parquet(examples, paths["examples"])
    write_json(metrics, paths["metrics"])
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
