"""prompts: the original's prompt reconstruction, and the seeded choice of steps."""

from __future__ import annotations

import pytest
from tiny import synthetic_rows

from steerpipe.prompts import held_out, reconstruct_prompt, select_examples, steps_of_kind

SMOLLM2_TEMPLATE_HEAD = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\n"
)


def test_reconstruct_prompt_exact(tokenizer) -> None:
    got = reconstruct_prompt(tokenizer, "What is 1+1?", ["One.", "Two.", "Three."], 2)
    assert got == (
        SMOLLM2_TEMPLATE_HEAD + "What is 1+1?<|im_end|>\n<|im_start|>assistant\nOne.\n\nTwo.\n\n"
    )


def test_prompt_tokens_have_no_extra_special_tokens(tokenizer) -> None:
    prompt = reconstruct_prompt(tokenizer, "Q", ["A."], 1)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(ids[0]) == 3  # system, user, assistant turns; nothing prepended


def test_steps_of_kind() -> None:
    row = synthetic_rows(1)[0]
    assert steps_of_kind(row, "verification") == [2]
    assert steps_of_kind(row, "conclusion") == [3]
    assert steps_of_kind(row, "other") == [0, 1]
    with pytest.raises(ValueError):
        steps_of_kind(row, "nonsense")


def test_select_examples_is_seeded_and_filtered(tokenizer) -> None:
    rows = synthetic_rows(10)
    kwargs = {"seed": 3, "min_step_tokens": 5, "max_prompt_tokens": 1600}
    a, dropped = select_examples(rows, tokenizer, "other", **kwargs)
    b, _ = select_examples(rows, tokenizer, "other", **kwargs)
    assert a == b and len(a) == 10 and dropped == {"min_step_tokens": 0, "max_prompt_tokens": 0}
    assert {e["step"] for e in a} <= {0, 1}
    c, _ = select_examples(rows, tokenizer, "other", **{**kwargs, "seed": 4})
    assert [(e["row"], e["step"]) for e in c] != [(e["row"], e["step"]) for e in a]
    ex = a[0]
    row = rows[ex["row"]]
    prompt = reconstruct_prompt(tokenizer, row["problem"], row["steps"], ex["step"])
    assert ex["prompt_ids"] == tokenizer.encode(prompt, add_special_tokens=False)
    # each filter's count: every one of the 10 drawn steps fails the one filter made strict
    none, dropped = select_examples(rows, tokenizer, "other", **{**kwargs, "max_prompt_tokens": 10})
    assert none == [] and dropped == {"min_step_tokens": 0, "max_prompt_tokens": 10}
    none, dropped = select_examples(rows, tokenizer, "other", **{**kwargs, "min_step_tokens": 500})
    assert none == [] and dropped == {"min_step_tokens": 10, "max_prompt_tokens": 0}


def test_held_out_takes_the_first_of_a_kind() -> None:
    ex = [
        {"split": s, "kind": k, "i": i}
        for i, (s, k) in enumerate([("test", "a"), ("test", "b"), ("test", "a"), ("train", "a")])
    ]
    assert [e["i"] for e in held_out(ex, "a")] == [0, 2]
    assert [e["i"] for e in held_out(ex, "a", 1)] == [0]
