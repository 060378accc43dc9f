"""storage: outputs are written whole or not at all; metadata round-trips."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from steerpipe.config import StageError
from steerpipe.storage import (
    atomic_path,
    iter_rows,
    load_table,
    read_json,
    read_metadata,
    read_parquet,
    read_table,
    read_tensors,
    tensor_file,
    write_json,
    write_parquet,
    write_tensors,
)


def test_failed_write_leaves_nothing(tmp_path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file(tmp_path) -> None:
    target = tmp_path / "m.json"
    write_json({"a": 1}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{broken")
        raise RuntimeError
    assert read_json(target) == {"a": 1}


def test_tensors_and_metadata_round_trip(tmp_path) -> None:
    t = torch.arange(6.0).reshape(2, 3)
    write_tensors({"x": t}, tmp_path / "t.safetensors", {"model": "m", "layers": [1, 2]})
    tensors, meta = read_tensors(tmp_path / "t.safetensors")
    assert torch.equal(tensors["x"], t)
    assert meta == {"model": "m", "layers": [1, 2]}


def test_tensor_files_are_byte_identical(tmp_path) -> None:
    t = {"b": torch.ones(3), "a": torch.zeros(2, 2)}
    meta = {"model": "m", "layers": [1, 2], "positions": [0, 1], "dtype": "float32", "k": 5}
    write_tensors(t, tmp_path / "1.safetensors", meta)
    write_tensors(t, tmp_path / "2.safetensors", dict(reversed(list(meta.items()))))
    assert (tmp_path / "1.safetensors").read_bytes() == (tmp_path / "2.safetensors").read_bytes()


@pytest.mark.parametrize("shape", [(5, 2, 3), (1, 7), (0, 4)])
def test_tensor_file_streams_the_file_write_tensors_writes(tmp_path, shape) -> None:
    t = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    meta = {"model": "m", "note": 'naïve "quoted"', "layers": [3, 1]}
    write_tensors({"resid_pre": t}, tmp_path / "whole.safetensors", meta)
    with tensor_file(tmp_path / "streamed.safetensors", "resid_pre", shape, meta) as out:
        assert not (tmp_path / "streamed.safetensors").exists()  # only once complete
        for i in reversed(range(shape[0])):  # rows in any order
            out[i] = t[i]
    whole = (tmp_path / "whole.safetensors").read_bytes()
    assert (tmp_path / "streamed.safetensors").read_bytes() == whole
    tensors, got = read_tensors(tmp_path / "streamed.safetensors")
    assert torch.equal(tensors["resid_pre"], t) and got == meta


def test_interrupted_tensor_file_leaves_nothing(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt), tensor_file(tmp_path / "a.st", "x", (4, 2), {}) as out:
        out[0] = 1.0
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_parquet_round_trip(tmp_path) -> None:
    rows = [{"a": 1, "b": [1, 2]}, {"a": 2, "b": []}]
    write_parquet(rows, tmp_path / "r.parquet")
    assert read_parquet(tmp_path / "r.parquet") == rows


def test_a_parquet_file_reads_as_pyarrows_read_table_without_its_dataset_module(tmp_path) -> None:
    """``read_table`` gives ``pq.read_table``'s table (schema metadata included) without
    importing ``pyarrow.dataset`` and pandas with it (0.18 s of a stage's start-up)."""
    path = tmp_path / "r.parquet"
    rows = [{"a": i, "b": [i] * i, "c": None if i % 3 else f"x{i}"} for i in range(40)]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({b"separator": b"\n\n"})
    pq.write_table(table, path, row_group_size=16)  # three row groups
    got = read_table(path)
    assert got.equals(pq.read_table(path)) and got.schema.metadata == {b"separator": b"\n\n"}
    code = (
        "import sys; from steerpipe.storage import read_parquet; "
        f"rows = read_parquet({str(path)!r}); "
        "print(len(rows), 'pyarrow.dataset' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["40", "False", "False"]


def _bad_files(tmp_path, good) -> dict[str, object]:
    """A missing file, one of another format, and ``good`` cut to half its bytes."""
    text = tmp_path / "notes.txt"
    text.write_text("problem,answer\n2+2,4\n")
    cut = tmp_path / f"cut{good.suffix}"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return {"missing": tmp_path / f"none{good.suffix}", "text": text, "truncated": cut}


@pytest.mark.parametrize("case", ["missing", "text", "truncated"])
def test_unreadable_inputs_end_in_one_line_naming_the_file(tmp_path, case) -> None:
    """Every reader of a stage's inputs (issue 36): a missing, truncated or wrong-format
    file is a StageError (``run_stage`` prints it and exits 1) that names the file and
    what it should have been, not pyarrow's, safetensors' or json's traceback."""
    table = tmp_path / "rows.parquet"
    write_parquet([{"problem": "2+2", "answer": "4"}] * 50, table)
    tensors = tmp_path / "t.safetensors"
    write_tensors({"x": torch.arange(4096.0)}, tensors, {"layers": [1]})
    blob = tmp_path / "m.json"
    write_json({"a": list(range(100))}, blob)
    readers = [
        (read_parquet, table, "Parquet file"),
        (read_tensors, tensors, "safetensors file"),
        (read_metadata, tensors, "safetensors file"),
        (lambda p: list(iter_rows(p, "x")), tensors, "safetensors file"),
        (read_json, blob, "JSON file"),
    ]
    for read, good, kind in readers:
        bad = _bad_files(tmp_path, good)[case]
        with pytest.raises(StageError) as info:
            read(bad)
        message = str(info.value)
        assert str(bad) in message and kind in message and "\n" not in message
        want = "no such file" if case == "missing" else "not a readable"
        assert message.startswith(f"{bad}: {want}"), message
    # the data sets' parameter is named too: a steps.source that is not Parquet
    bad = _bad_files(tmp_path, table)[case]
    with pytest.raises(StageError, match=r"^steps\.source '.*': (no such file|not a readable)"):
        load_table(str(bad), "train", ("problem",), "steps.source")


def test_a_stage_input_without_a_column_it_needs_is_named(tmp_path) -> None:
    """Rows from ``read_parquet`` name their file when a column is missing (issue 36): a
    stage handed a Parquet file with other columns exits 1 with that one line."""
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "generations.parquet"
    write_parquet([{"prompt": "2+2", "nll": 1.5}], bad)
    with pytest.raises(StageError, match=r"generations\.parquet: no column 'text' \(it has: "):
        _ = read_parquet(bad)[0]["text"]
    assert read_parquet(bad)[0] == {"prompt": "2+2", "nll": 1.5}
    repo = Path(__file__).resolve().parents[1]
    args = ["--generations", str(bad), "--judged", str(tmp_path / "j.parquet")]
    proc = subprocess.run(
        [sys.executable, "stages/judge.py", *args, "--stats", str(tmp_path / "j.json")],
        cwd=repo, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip() == (f"error: {bad}: no column 'text' (it has: prompt, nll)"), (
        proc.stderr[-2000:]
    )
    assert not (tmp_path / "j.parquet").exists()
