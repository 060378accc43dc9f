"""step_traces: the model's own reasoning, split into steps and labelled, in the paper's schema."""

from __future__ import annotations

import pyarrow as pa

from steerpipe.step_traces import build_rows
from steerpipe.steps import SCHEMA, validate_rows


def test_build_rows_schema_and_own_text(tiny_model, tokenizer) -> None:
    rows = build_rows(
        tiny_model,
        tokenizer,
        ["What is 2 + 2?", "What is 3 + 5?"],
        instruction="Solve: ",
        max_new_tokens=12,
        temperature=1.0,
        top_p=0.95,
        seed=0,
        batch_size=2,
        progress=False,
    )
    assert [r["problem"] for r in rows] == ["Solve: What is 2 + 2?", "Solve: What is 3 + 5?"]
    pa.Table.from_pylist(rows, schema=SCHEMA)  # fits the paper's schema
    validate_rows(rows)
