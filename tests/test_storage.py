"""storage: outputs are written whole or not at all; metadata round-trips."""

from __future__ import annotations

import pytest
import torch

from steerpipe.storage import (
    atomic_path,
    read_json,
    read_parquet,
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
