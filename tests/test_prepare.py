"""prepare: a step's prompt as the model's own trace (and the original's rule), the seeded
choice of steps. The round trip on the packaged model's own traces is in test_generated_steps."""

from __future__ import annotations

import pytest
from tiny import synthetic_rows

from steerpipe.config import StageError
from steerpipe.lm.chat import chat_prompt_ids
from steerpipe.steering.prepare import (
    held_out,
    original_prompt,
    select_examples,
    stable_steps,
    step_tokens,
    steps_of_kind,
)

SMOLLM2_TEMPLATE_HEAD = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\n"
)


def test_original_prompt_exact(tokenizer) -> None:
    got = original_prompt(tokenizer, "What is 1+1?", ["One.", "Two.", "Three."], 2)
    assert got == (
        SMOLLM2_TEMPLATE_HEAD + "What is 1+1?<|im_end|>\n<|im_start|>assistant\nOne.\n\nTwo.\n\n"
    )


def tokens(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def test_trace_prompts_are_prefixes_of_the_trace(tokenizer) -> None:
    """Without the model's ids: the chat prompt, then the tokens of the steps joined."""
    row = {"problem": "Q?", "steps": ["One step.", "\nTwo: 2.", "So 3."]}
    trace = chat_prompt_ids(tokenizer, "Q?") + tokens(tokenizer, "One step.\n\n\nTwo: 2.\n\nSo 3.")
    for k, step in enumerate(row["steps"]):
        prompt, ids = step_tokens(tokenizer, row, k, separator="\n\n", reconstruction="trace")
        assert prompt + ids == trace[: len(prompt) + len(ids)]
        assert tokenizer.decode(ids) == step
    prompt, _ = step_tokens(tokenizer, row, 0, separator="\n\n", reconstruction="trace")
    assert prompt == chat_prompt_ids(tokenizer, "Q?")  # step 0 follows the generation prompt
    # the original's prompt of step 1 ends in "\n\n" as one token; the model writes two "\n"
    prompt, _ = step_tokens(tokenizer, row, 2, separator="\n\n", reconstruction="trace")
    original = tokens(tokenizer, original_prompt(tokenizer, "Q?", row["steps"], 2))
    newline, two_newlines = tokens(tokenizer, "\n"), tokens(tokenizer, "\n\n")
    assert prompt[-2:] == newline * 2 and original[-1:] == two_newlines and len(two_newlines) == 1


def test_trace_prompts_keep_the_models_own_tokens(tokenizer) -> None:
    """The model may write a boundary as a token its tokenizer would not choose (SmolLM2
    wrote " \n\n" as one token in one of 32 traces): the data set's ids are used as they are."""
    spaced = tokens(tokenizer, " \n\n")
    assert len(spaced) == 1 and tokens(tokenizer, "a. \n\nSo") != tokens(
        tokenizer, "a."
    ) + spaced + tokens(tokenizer, "So")
    ids = tokens(tokenizer, "First step.") + spaced + tokens(tokenizer, "So the answer is 4.")
    ids.append(tokenizer.eos_token_id)
    row = {"problem": "Q?", "steps": ["First step. ", "So the answer is 4."], "response_ids": ids}
    trace = chat_prompt_ids(tokenizer, "Q?") + ids
    prompt, step = step_tokens(tokenizer, row, 1, separator="\n\n", reconstruction="trace")
    assert prompt + step == trace[: len(prompt) + len(step)]
    assert prompt[-1:] == spaced and tokenizer.decode(step) == "So the answer is 4."
    # a token that straddles the step's start goes to the step: "A" + " \n\n" + "B" split on
    # " " gives the steps "A" and "\n\nB", and the token " \n\n" starts before step 1
    row = {
        "problem": "Q?",
        "steps": ["A", "\n\nB"],
        "response_ids": tokens(tokenizer, "A") + spaced + tokens(tokenizer, "B"),
    }
    prompt, step = step_tokens(tokenizer, row, 1, separator=" ", reconstruction="trace")
    assert (
        step[:1] == spaced
        and prompt + step == chat_prompt_ids(tokenizer, "Q?") + row["response_ids"]
    )


def test_original_reconstruction_tokenises_each_part_alone(tokenizer) -> None:
    row = {"problem": "Q?", "steps": ["One.", "Two."]}
    prompt, step = step_tokens(tokenizer, row, 1, separator="\n\n", reconstruction="original")
    assert prompt == tokens(tokenizer, original_prompt(tokenizer, "Q?", row["steps"], 1))
    assert step == tokens(tokenizer, "Two.")


def test_prompt_tokens_have_no_extra_special_tokens(tokenizer) -> None:
    prompt = original_prompt(tokenizer, "Q", ["A."], 1)
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
    kwargs = {
        "separator": "\n\n",
        "reconstruction": "trace",
        "seed": 3,
        "min_step_tokens": 5,
        "max_prompt_tokens": 1600,
    }
    a, dropped = select_examples(rows, tokenizer, "other", **kwargs)
    b, _ = select_examples(rows, tokenizer, "other", **kwargs)
    assert a == b and len(a) == 10 and dropped == {"min_step_tokens": 0, "max_prompt_tokens": 0}
    assert {e["step"] for e in a} <= {0, 1}
    c, _ = select_examples(rows, tokenizer, "other", **{**kwargs, "seed": 4})
    assert [(e["row"], e["step"]) for e in c] != [(e["row"], e["step"]) for e in a]
    ex = a[0]
    row = rows[ex["row"]]
    want = step_tokens(tokenizer, row, ex["step"], separator="\n\n", reconstruction="trace")
    assert (ex["prompt_ids"], ex["step_ids"]) == want
    # each filter's count: every one of the 10 drawn steps fails the one filter made strict
    none, dropped = select_examples(rows, tokenizer, "other", **{**kwargs, "max_prompt_tokens": 10})
    assert none == [] and dropped == {"min_step_tokens": 0, "max_prompt_tokens": 10}
    none, dropped = select_examples(rows, tokenizer, "other", **{**kwargs, "min_step_tokens": 500})
    assert none == [] and dropped == {"min_step_tokens": 10, "max_prompt_tokens": 0}


def test_min_stability_draws_among_the_stable_steps_only(tokenizer) -> None:
    """With ``allowed`` (``stable_steps`` of the stability records), a problem's draw is among
    its stable steps; a problem with none is left out and counted."""
    rows = synthetic_rows(6)
    records = [
        {"row": 0, "step": 0, "kind": "other", "stability": 0.75},
        {"row": 0, "step": 1, "kind": "other", "stability": 0.25},
        {"row": 1, "step": 1, "kind": "other", "stability": 0.5},
        {"row": 1, "step": 0, "kind": "other", "stability": 0.0},
        {"row": 2, "step": 3, "kind": "conclusion", "stability": 1.0},
    ]
    allowed = stable_steps(records, 0.5)
    assert allowed == {"other": {(0, 0), (1, 1)}, "conclusion": {(2, 3)}}
    kwargs = {"separator": "\n\n", "reconstruction": "trace", "seed": 3}
    kwargs |= {"min_step_tokens": 5, "max_prompt_tokens": 1600}
    chosen, dropped = select_examples(rows, tokenizer, "other", allowed=allowed["other"], **kwargs)
    assert sorted((e["row"], e["step"]) for e in chosen) == [(0, 0), (1, 1)]
    assert dropped == {"min_step_tokens": 0, "max_prompt_tokens": 0, "min_stability": 4}
    everything, _ = select_examples(rows, tokenizer, "other", **kwargs)
    assert len(everything) == 6


def test_held_out_takes_the_first_of_a_kind() -> None:
    ex = [
        {"split": s, "kind": k, "i": i}
        for i, (s, k) in enumerate([("test", "a"), ("test", "b"), ("test", "a"), ("train", "a")])
    ]
    assert [e["i"] for e in held_out(ex, "a")] == [0, 2]
    assert [e["i"] for e in held_out(ex, "a", 1)] == [0]


def test_a_step_the_tokens_do_not_give_back_names_its_row(tokenizer) -> None:
    rows = [{**synthetic_rows(1)[0], "response_ids": tokens(tokenizer, "Something else.")}]
    with pytest.raises(StageError, match=r"data set row 0: step 0 is not in the trace's text"):
        select_examples(
            rows,
            tokenizer,
            "other",
            separator="\n\n",
            reconstruction="trace",
            seed=0,
            min_step_tokens=1,
            max_prompt_tokens=1600,
        )
