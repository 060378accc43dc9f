"""The reasoning-step data set: its schema, validation, loading, and splitting a trace into steps.

Schema of ``immindich/reasoning-steps-labeled`` (the paper's data set): ``problem: str``,
``steps: list[str]``, ``verification_steps: list[int]``, ``conclusion_steps: list[int]``.

- ``load_rows(source)``: the hub data set by id (through ``datasets``), or a local Parquet file
  with the same schema.
- ``read_steps`` / ``steps_table``: the stage's own file, with the separator its steps were
  split on. The offline default's rows are written by the model itself
  (``generated_steps``); ``claude/step_labels.py`` labels steps with Claude instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from steerpipe.config import StageError
from steerpipe.storage import load_table, read_table, reading

SCHEMA = pa.schema(
    [
        ("problem", pa.string()),
        ("steps", pa.list_(pa.string())),
        ("verification_steps", pa.list_(pa.int64())),
        ("conclusion_steps", pa.list_(pa.int64())),
    ]
)
FIELDS = tuple(SCHEMA.names)
HUB_ID = "immindich/reasoning-steps-labeled"
# Our own traces keep the token ids the model wrote, so that prompts rebuild its exact context.
RESPONSE_IDS = pa.field("response_ids", pa.list_(pa.int64()))


def split_steps(text: str, separator: str) -> list[str]:
    """Steps of a trace: the text before ``</think>`` split on ``separator``.

    Nothing is stripped: a piece of only whitespace joins the next step (at the end, the one
    before), so that ``separator.join(steps)`` is the text and each step can be found in it.
    """
    steps: list[str] = []
    carry = ""
    for piece in text.split("</think>")[0].split(separator):
        if piece.strip():
            steps.append(carry + piece)
            carry = ""
        else:
            carry += piece + separator
    if carry and steps:
        steps[-1] += separator + carry[: -len(separator)]
    return steps


def steps_table(rows: list[dict[str, Any]], separator: str) -> pa.Table:
    """The data set as a table; the schema's metadata records the separator its steps were
    split on (``prepare`` joins them with it), and traces we generated keep their token ids."""
    schema = SCHEMA.append(RESPONSE_IDS) if rows and "response_ids" in rows[0] else SCHEMA
    return pa.Table.from_pylist(rows, schema=schema.with_metadata({"separator": separator}))


def read_steps(path: str | Path) -> tuple[list[dict[str, Any]], str]:
    """The rows of a data set written by ``steps_table``, validated, and its separator."""
    with reading(path, "Parquet file of steps"):
        table = read_table(path)
    separator = (table.schema.metadata or {}).get(b"separator")
    if separator is None:
        raise StageError(f"{path} has no step separator in its metadata; re-run steps_dataset")
    rows = table.to_pylist()
    validate_rows(rows)
    return rows, separator.decode()


def validate_rows(rows: list[dict[str, Any]]) -> None:
    """Every row has the four fields with the right types and step indices in range."""
    for r, row in enumerate(rows):
        missing = [f for f in FIELDS if row.get(f) is None]
        if missing:
            raise StageError(f"data set row {r}: missing field(s) {', '.join(missing)}")
        steps = row["steps"]
        if not isinstance(row["problem"], str) or not all(isinstance(s, str) for s in steps):
            raise StageError(f"data set row {r}: 'problem' and 'steps' must be strings")
        for field in ("verification_steps", "conclusion_steps"):
            for k in row[field]:
                if not isinstance(k, int) or not 0 <= k < len(steps):
                    raise StageError(
                        f"data set row {r}: {field} has index {k!r}, "
                        f"but the row has {len(steps)} steps"
                    )


def load_rows(source: str) -> list[dict[str, Any]]:
    """Rows from a local Parquet file, or from the hub data set ``source`` (split ``train``)."""
    rows = load_table(source, "train", FIELDS, "steps.source")
    validate_rows(rows)
    return rows
