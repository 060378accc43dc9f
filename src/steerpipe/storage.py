"""Outputs written whole or not at all: every writer goes to a temporary name, then renames.

Tables are Parquet (pyarrow), tensors safetensors with string metadata, metrics JSON.
A crash or Ctrl-C mid-write leaves the previous file (or none), never half a file.
``tensor_file`` streams one large tensor to disk row by row (activation dumps).
``load_table`` reads the input data sets: a hub id through ``datasets``, or a local Parquet file.
Every reader ends a missing, truncated or wrong-format file in one line naming it (``reading``).
torch is imported by the tensor writers only, so that stages without tensors (the judge, the
reports) start in a second rather than five.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors import SafetensorError, safe_open

from steerpipe.config import StageError

if TYPE_CHECKING:
    import torch

_META_KEY = "steerpipe"


def load_table(source: str, split: str, columns: tuple[str, ...], key: str) -> list[dict[str, Any]]:
    """Rows (only ``columns``) of a local Parquet file, or of split ``split`` of hub data set
    ``source``. ``key`` names the parameter in error messages."""
    import datasets

    try:
        if Path(source).suffix == ".parquet" or Path(source).exists():
            if not Path(source).is_file():
                raise StageError(f"{key} {source!r}: no such file (expected a Parquet file)")
            with reading(source, "Parquet file", key=key):
                pq.read_schema(source)  # datasets' own error for a bad file is a long traceback
            ds = datasets.load_dataset("parquet", data_files=str(source), split="train")
        else:
            ds = datasets.load_dataset(source, split=split)
    except (FileNotFoundError, ConnectionError, OSError) as e:
        raise StageError(
            f"{key} {source!r}: could not load it ({type(e).__name__}: {e}). "
            "Give a local Parquet file, or run where the hub is reachable."
        ) from e
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise StageError(f"{key} {source!r}: missing column(s) {', '.join(missing)}")
    return [{c: row[c] for c in columns} for row in ds]


@contextmanager
def reading(path: str | Path, kind: str, *, key: str | None = None) -> Iterator[None]:
    """Turns the errors of reading ``path`` (missing, truncated or another format) into one
    ``StageError`` line that names the file, what it should have been and, where given, the
    parameter ``key`` that named it."""
    where = f"{key} {str(path)!r}" if key else str(path)
    try:
        yield
    except FileNotFoundError as e:
        raise StageError(f"{where}: no such file (expected a {kind})") from e
    except (pa.ArrowException, SafetensorError, ValueError, OSError) as e:  # JSON's, UTF-8's
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StageError(f"{where}: not a readable {kind} ({detail})") from e


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(rows: list[dict[str, Any]] | pa.Table, path: str | Path) -> None:
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


class Row(dict[str, Any]):
    """A row of a Parquet file (``read_parquet``): a column it lacks is a ``StageError``
    that names the file and the columns it has, not a bare ``KeyError``."""

    __slots__ = ("source",)
    source: str

    def __missing__(self, key: str) -> Any:
        have = ", ".join(self) or "none"
        raise StageError(f"{self.source}: no column {key!r} (it has: {have})")


def read_table(path: str | Path) -> pa.Table:
    """One Parquet file, whole: ``pq.read_table``'s table without ``pyarrow.dataset``, whose
    import brings pandas (0.18 s of a stage's start-up, where the stage builds no arrow array:
    pyarrow imports pandas for that anyway)."""
    return pq.ParquetFile(path).read()


def read_parquet(path: str | Path) -> list[dict[str, Any]]:
    with reading(path, "Parquet file"):
        rows = read_table(path).to_pylist()
    out: list[dict[str, Any]] = []
    for r in rows:
        row = Row(r)
        row.source = str(path)
        out.append(row)
    return out


def write_tensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, Any]
) -> None:
    """safetensors with metadata, byte for byte the same for the same inputs.

    safetensors keeps metadata in a hash map whose order changes from one write to the next,
    which would make DVC see a changed output (and re-run everything downstream) after every
    re-run. So the metadata goes in as one JSON string with sorted keys, under ``steerpipe``.
    """
    from safetensors.torch import save_file

    meta = {_META_KEY: json.dumps(metadata, sort_keys=True)}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=meta)


@contextmanager
def tensor_file(
    path: str | Path, name: str, shape: tuple[int, ...], metadata: dict[str, Any]
) -> Iterator[torch.Tensor]:
    """A zero-filled float32 tensor mapped onto a safetensors file, to be filled in place.

    Rows can arrive in any order and only the pages being written are held in memory, so a
    dump larger than RAM streams to disk. The file is the one ``write_tensors`` would write
    for the same tensor (byte for byte: the same header, written as safetensors writes it)
    and appears at ``path`` only when the block exits without an error.
    """
    import torch

    nbytes = 4 * int(np.prod(shape))
    header = {
        "__metadata__": {_META_KEY: json.dumps(metadata, sort_keys=True)},
        name: {"dtype": "F32", "shape": list(shape), "data_offsets": [0, nbytes]},
    }
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            f.truncate(8 + len(text) + nbytes)  # a sparse file of zeros
        if nbytes == 0:  # nothing to map
            yield torch.zeros(shape)
            return
        mapped = np.memmap(tmp, dtype="<f4", mode="r+", offset=8 + len(text), shape=shape)
        yield torch.from_numpy(mapped)
        mapped.flush()
        del mapped


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with reading(path, "safetensors file"), safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    return tensors, read_metadata(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    with reading(path, "safetensors file"), safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    if _META_KEY in raw:
        return dict(json.loads(raw[_META_KEY]))
    meta: dict[str, Any] = {}  # files written by other tools: one JSON value per key
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return meta


def iter_rows(path: str | Path, name: str, chunk: int = 256) -> Iterator[torch.Tensor]:
    """Tensor ``name`` of a safetensors file, ``chunk`` rows (first dimension) at a time,
    so that a file larger than memory can be reduced."""
    with reading(path, "safetensors file"), safe_open(str(path), framework="pt") as f:
        rows = f.get_slice(name)
        n = rows.get_shape()[0]
        for start in range(0, n, chunk):
            yield rows[start : start + chunk]


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    with reading(path, "JSON file"):
        return json.loads(Path(path).read_text())
