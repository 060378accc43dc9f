"""steps: splitting, validation, the local-Parquet path of the hub loader, building from a model."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_batches import FakeServer, FakeState
from tiny import synthetic_rows

from steerpipe.config import StageError
from steerpipe.labels import label_steps
from steerpipe.steps import (
    SCHEMA,
    build_rows,
    label_rows_with_claude,
    load_rows,
    parse_labels,
    split_steps,
    validate_rows,
)


def test_split_steps() -> None:
    text = "First step.\n\nSecond step.\n\n\n\nThird.\n\n</think>The answer."
    assert split_steps(text) == ["First step.", "Second step.", "Third."]


def test_load_rows_from_local_parquet(tmp_path) -> None:
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(synthetic_rows(5), schema=SCHEMA), path)
    rows = load_rows(str(path))
    assert rows == synthetic_rows(5)


def test_load_rows_missing_column(tmp_path) -> None:
    path = tmp_path / "bad.parquet"
    rows = [{k: v for k, v in r.items() if k != "conclusion_steps"} for r in synthetic_rows(2)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(StageError, match="missing column.*conclusion_steps"):
        load_rows(str(path))


def test_load_rows_missing_file() -> None:
    with pytest.raises(StageError, match="no such file"):
        load_rows("does/not/exist.parquet")


def test_validate_rows_names_the_row() -> None:
    rows = synthetic_rows(3)
    rows[1]["verification_steps"] = [7]
    with pytest.raises(StageError, match="row 1: verification_steps has index 7"):
        validate_rows(rows)
    rows = synthetic_rows(3)
    rows[2]["problem"] = None
    with pytest.raises(StageError, match="row 2: missing field"):
        validate_rows(rows)


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


def _label_answer(cid: str, params: dict, attempt: int) -> tuple[str, str]:
    """Claude's part in the fake: the rule labels as JSON, in the forms models answer in."""
    prompt = params["messages"][0]["content"][0]["text"]
    steps = re.findall(r"^\[\d+\] (.*)$", prompt.split("Steps:\n", 1)[1], re.MULTILINE)
    if "GARBLED" in prompt:
        return "succeeded", "I could not decide."
    v, c = label_steps(steps)
    body = json.dumps({"verification_steps": v + [99], "conclusion_steps": c})
    return "succeeded", [body, f"Here you go:\n```json\n{body}\n```"][len(steps) % 2]


def test_label_rows_with_claude(tmp_path, monkeypatch) -> None:
    server = FakeServer(FakeState(answer=_label_answer))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    rows = synthetic_rows(4)
    rows[1]["steps"] = rows[1]["steps"][:3]  # an odd number of steps: the fenced answer
    rows[3]["problem"] = "GARBLED"
    for r in rows:
        r["verification_steps"], r["conclusion_steps"] = [], []
    settings = {"store": str(tmp_path), "poll_seconds": 0.01, "max_poll_seconds": 0.05}
    try:
        stats = label_rows_with_claude(rows, settings)
        assert [(r["verification_steps"], r["conclusion_steps"]) for r in rows] == [
            ([2], [3]),
            ([2], []),
            ([2], [3]),
            ([], []),
        ]
        assert stats["unparsed"] == 1 and stats["requests_sent"] == 4
        again = label_rows_with_claude([dict(r) for r in rows], settings)
        assert again["requests_sent"] == 0 and server.state.requests_received == 4
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("answer", "labels"),
    [
        ('{"verification_steps": [1], "conclusion_steps": [2]}', ([1], [2])),
        ('Sure.\n```json\n{"verification_steps": [], "conclusion_steps": [0, 5]}\n```', ([], [0])),
        ('{"verification_steps": ["1", 1.5, 1], "conclusion_steps": []}', ([1], [])),
        ("no json here", None),
        ('{"verification_steps": [1]}', None),
        ('{"verification_steps": 1, "conclusion_steps": []}', None),
    ],
)
def test_parse_labels(answer: str, labels) -> None:
    assert parse_labels(answer, 3) == labels
