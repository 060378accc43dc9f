"""Stage prepare: rebuild each labelled step's prompt, tokenise, filter, split train/test.

    python stages/prepare.py              (reads `model.name` and `prepare`)

One step per problem and kind (``prepare.kinds``: the positive kind first, then the negative),
drawn with a seeded generator; steps shorter than ``min_step_tokens`` or prompts longer than
``max_prompt_tokens`` are dropped; the first ``test_size`` of each kind are the test set.
Outputs: data/prepare/examples.parquet, data/prepare/metrics.json.
"""

from __future__ import annotations

from steerpipe.config import StageError, load_params, run_stage
from steerpipe.models import load_tokenizer
from steerpipe.prompts import KINDS, select_examples
from steerpipe.steps import validate_rows
from steerpipe.storage import read_parquet, write_json, write_parquet


def main() -> None:
    p = load_params("prepare")
    kinds = list(p["kinds"])
    if len(kinds) != 2 or len(set(kinds)) != 2 or not set(kinds) <= set(KINDS):
        raise StageError(f"prepare.kinds must be two different kinds of {KINDS}, got {kinds}")
    test_size = int(p["test_size"])
    if test_size < 1:
        raise StageError(f"prepare.test_size must be at least 1, got {test_size}")
    rows = read_parquet("data/steps/steps.parquet")
    validate_rows(rows)
    tok = load_tokenizer(load_params("model")["name"])
    examples, metrics = [], {}
    for kind in kinds:
        chosen = select_examples(
            rows,
            tok,
            kind,
            seed=int(p["seed"]),
            min_step_tokens=int(p["min_step_tokens"]),
            max_prompt_tokens=int(p["max_prompt_tokens"]),
        )
        if len(chosen) <= test_size:
            raise StageError(
                f"only {len(chosen)} '{kind}' examples are left after filtering "
                f"(prepare.min_step_tokens={p['min_step_tokens']}, "
                f"prepare.max_prompt_tokens={p['max_prompt_tokens']}); prepare.test_size="
                f"{test_size} needs more to leave a training set"
            )
        for i, ex in enumerate(chosen):
            ex["split"] = "test" if i < test_size else "train"
        examples += chosen
        metrics[kind] = {"test": test_size, "train": len(chosen) - test_size}
    write_parquet(examples, "data/prepare/examples.parquet")
    write_json(metrics, "data/prepare/metrics.json")
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
