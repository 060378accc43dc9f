"""generated_steps: the model's own reasoning, split into steps and labelled, as the paper's."""

from __future__ import annotations

import pyarrow as pa
import pytest

from steerpipe.gym import gym_problems
from steerpipe.lm.chat import chat_prompt_ids
from steerpipe.lm.generation import generate
from steerpipe.lm.models import load_model
from steerpipe.steering.generated_steps import build_rows
from steerpipe.steering.prepare import step_tokens
from steerpipe.steering.steps import SCHEMA, validate_rows


def test_build_rows_schema_and_own_text(tiny_model, tokenizer) -> None:
    kwargs = {"max_new_tokens": 12, "temperature": 1.0, "top_p": 0.95, "seed": 0, "batch_size": 2}
    problems = ["What is 2 + 2?", "What is 3 + 5?", "What is 1 + 1?"]
    rows, cut = build_rows(
        tiny_model,
        tokenizer,
        problems,
        instruction="Solve: ",
        separator="\n\n",
        label_mid_step=False,
        progress=False,
        **kwargs,
    )
    # the same samples, and which of them ran into max_new_tokens before an end token
    prompts = [chat_prompt_ids(tokenizer, "Solve: " + p) for p in problems]
    outs = generate(tiny_model, prompts, progress=False, **kwargs)
    eos = set(tokenizer.all_special_ids)
    assert cut == sum(not out or out[-1] not in eos for out in outs)
    assert [r["problem"] for r in rows] == ["Solve: " + p for p in problems]
    assert [r["response_ids"] for r in rows] == outs
    pa.Table.from_pylist(rows, schema=SCHEMA.append(pa.field("response_ids", pa.list_(pa.int64()))))
    validate_rows(rows)


@pytest.mark.slow
def test_step_prompts_round_trip_on_the_packaged_models_traces() -> None:
    """Each step's prompt + step is exactly a prefix of the model's own trace (its chat prompt
    and the tokens it wrote), for every step of every trace; step 0 follows the chat prompt."""
    model, tok = load_model()
    instruction = "Solve the problem. Write one step per paragraph, with a blank line between.\n\n"
    kwargs = {"temperature": 0.6, "top_p": 0.95, "seed": 0, "batch_size": 8, "progress": False}
    problems = gym_problems("gsm_symbolic", 8, 42)
    rows, _ = build_rows(
        model,
        tok,
        problems,
        instruction=instruction,
        separator="\n\n",
        label_mid_step=False,
        max_new_tokens=96,
        **kwargs,
    )
    checked = 0
    for row in rows:
        trace = chat_prompt_ids(tok, row["problem"]) + row["response_ids"]
        for k, text in enumerate(row["steps"]):
            prompt, step = step_tokens(tok, row, k, separator="\n\n", reconstruction="trace")
            assert prompt + step == trace[: len(prompt) + len(step)], (row["problem"], k)
            assert text.strip() in tok.decode(step)
            if k == 0:
                assert prompt == chat_prompt_ids(tok, row["problem"])
            checked += 1
    assert checked >= 8
