"""The reasoning-step data set: schema, validation, loading, and the packaged problems.

Schema of ``immindich/reasoning-steps-labeled`` (the paper's data set): ``problem: str``,
``steps: list[str]``, ``verification_steps: list[int]``, ``conclusion_steps: list[int]``.

- ``load_rows(source)``: the hub data set by id (through ``datasets``), or a local Parquet file
  with the same schema.
- ``gym_problems(task, n, seed)``: questions of a packaged ``reasoning-gym`` task, the offline
  default's problems (``step_traces`` lets the model reason on them; ``claude_labels`` labels
  steps with Claude).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from steerpipe.config import StageError
from steerpipe.storage import load_table

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


def split_steps(text: str) -> list[str]:
    """Steps of a trace: the text before ``</think>`` split on blank lines, empty ones dropped."""
    text = text.split("</think>")[0]
    return [s.strip() for s in text.split("\n\n") if s.strip()]


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


def gym_problems(task: str, n: int, seed: int) -> list[str]:
    """``n`` questions from a packaged reasoning-gym task, seeded."""
    import reasoning_gym

    try:
        ds = reasoning_gym.create_dataset(task, size=n, seed=seed)
    except Exception as e:  # reasoning-gym raises plain errors for unknown task names
        raise StageError(f"steps.task {task!r}: reasoning-gym cannot build it ({e})") from e
    return [str(ds[i]["question"]) for i in range(n)]
