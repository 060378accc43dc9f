"""step_traces: the model's own reasoning, split into steps and labelled, in the paper's schema."""

from __future__ import annotations

import pyarrow as pa

from steerpipe.generation import generate
from steerpipe.prompts import chat_prompt_ids
from steerpipe.step_traces import build_rows
from steerpipe.steps import SCHEMA, validate_rows


def test_build_rows_schema_and_own_text(tiny_model, tokenizer) -> None:
    kwargs = {"max_new_tokens": 12, "temperature": 1.0, "top_p": 0.95, "seed": 0, "batch_size": 2}
    problems = ["What is 2 + 2?", "What is 3 + 5?", "What is 1 + 1?"]
    rows, cut = build_rows(
        tiny_model, tokenizer, problems, instruction="Solve: ", progress=False, **kwargs
    )
    # the same samples, and which of them ran into max_new_tokens before an end token
    prompts = [chat_prompt_ids(tokenizer, "Solve: " + p) for p in problems]
    outs = generate(tiny_model, prompts, progress=False, **kwargs)
    eos = set(tokenizer.all_special_ids)
    assert cut == sum(not out or out[-1] not in eos for out in outs)
    assert [r["problem"] for r in rows] == ["Solve: " + p for p in problems]
    pa.Table.from_pylist(rows, schema=SCHEMA)  # fits the paper's schema
    validate_rows(rows)
