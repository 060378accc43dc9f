"""batch_sizes: batch sizes from the free memory, with the cap where there is no limit (the CPU)."""

from __future__ import annotations

import torch

from steerpipe.lm import batch_sizes


def test_per_token_costs(tiny_model) -> None:
    # tiny Llama: 4 layers, 2 KV heads of 16 dims, d 64, MLP 128, float32
    assert batch_sizes.kv_bytes_per_token(tiny_model) == 2 * 4 * 2 * 16 * 4
    assert batch_sizes.activation_bytes_per_token(tiny_model) == 4 * (6 * 64 + 3 * 128)


def test_fit_rows_and_tokens_follow_the_free_memory(tiny_model, monkeypatch) -> None:
    assert batch_sizes.free_bytes(torch.device("cpu")) is None
    assert batch_sizes.fit_rows(tiny_model, 1000, cap=64) == 64
    assert batch_sizes.fit_tokens(tiny_model, cap=8192, longest=100) == 8192
    per_row = 100 * (1024 + 3072) + len(tiny_model.get_input_embeddings().weight) * 24
    monkeypatch.setattr(batch_sizes, "free_bytes", lambda device: 10 * per_row)
    assert batch_sizes.fit_rows(tiny_model, 100, cap=64) == 8  # 80% of ten rows
    assert batch_sizes.fit_rows(tiny_model, 100, cap=5) == 5
    monkeypatch.setattr(batch_sizes, "free_bytes", lambda device: 0)
    assert batch_sizes.fit_rows(tiny_model, 100, cap=64) == 1  # one row is always tried
    assert batch_sizes.fit_tokens(tiny_model, cap=8192, longest=100) == 100
    monkeypatch.setattr(batch_sizes, "free_bytes", lambda device: 1000 * (3072 + 400))
    assert batch_sizes.fit_tokens(tiny_model, cap=8192, longest=100) == 800
