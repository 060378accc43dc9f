"""steps: splitting, validation, the local-Parquet path of the hub loader."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tiny import synthetic_rows

from steerpipe.config import StageError
from steerpipe.steering.steps import (
    SCHEMA,
    load_rows,
    read_steps,
    split_steps,
    steps_table,
    validate_rows,
)


def test_split_steps_keeps_the_text() -> None:
    text = "First step.\n\nSecond step.\n\n\n\nThird.\n\n</think>The answer."
    steps = split_steps(text, "\n\n")
    assert steps == ["First step.", "Second step.", "\n\nThird.\n\n"]
    assert "\n\n".join(steps) == text.split("</think>")[0]  # each step is found in the text
    assert split_steps("\n\nA\n\n \n\nB", "\n\n") == ["\n\nA", " \n\nB"]
    assert split_steps("1. A\n2. B\n", "\n") == ["1. A", "2. B\n"]
    assert split_steps(" \n\n", "\n\n") == []


def test_steps_table_records_the_separator(tmp_path) -> None:
    rows = synthetic_rows(3)
    pq.write_table(steps_table(rows, "\n"), tmp_path / "s.parquet")
    assert read_steps(tmp_path / "s.parquet") == (rows, "\n")
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp_path / "old.parquet")
    with pytest.raises(StageError, match="no step separator"):
        read_steps(tmp_path / "old.parquet")


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


def test_a_steps_file_that_is_not_parquet_is_named(tmp_path) -> None:
    """A ``steps.source`` or a ``steps.parquet`` of another format: one line naming the file,
    not pyarrow's traceback (issue 36)."""
    text = tmp_path / "steps.csv"
    text.write_text("problem,steps\n2+2,4\n")
    with pytest.raises(StageError, match=r"^steps\.source '.*steps\.csv': not a readable Parquet"):
        load_rows(str(text))
    with pytest.raises(StageError, match=r"^/.*steps\.csv: not a readable Parquet file of steps"):
        read_steps(text)


def test_validate_rows_names_the_row() -> None:
    rows = synthetic_rows(3)
    rows[1]["verification_steps"] = [7]
    with pytest.raises(StageError, match="row 1: verification_steps has index 7"):
        validate_rows(rows)
    rows = synthetic_rows(3)
    rows[2]["problem"] = None
    with pytest.raises(StageError, match="row 2: missing field"):
        validate_rows(rows)
