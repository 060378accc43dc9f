"""activations: batched capture equals one-at-a-time capture and the bridge's hook points."""

from __future__ import annotations

import pytest
import torch

from steerpipe.activations import capture_resid_pre
from steerpipe.models import load_bridge

SEQS = [
    [1, 5, 9, 300, 20, 41, 8, 77, 600],
    [1, 44, 3, 90, 12, 13],
    [1, 700, 701, 702, 703, 704, 705, 706, 707, 708, 709, 710],
]
STARTS = [3, 1, 6]


def test_batched_equals_one_at_a_time(tiny_model) -> None:
    kwargs = {"layers": [0, 2, 3], "n_positions": 3, "progress": False}
    batched = capture_resid_pre(tiny_model, SEQS, STARTS, token_budget=10_000, **kwargs)
    alone = torch.cat(
        [
            capture_resid_pre(tiny_model, [s], [st], **kwargs)
            for s, st in zip(SEQS, STARTS, strict=True)
        ]
    )
    assert batched.shape == (3, 3, 3, 64)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_budget_of_one_row_per_batch_gives_same_result(tiny_model) -> None:
    kwargs = {"layers": [1], "n_positions": 2, "progress": False}
    big = capture_resid_pre(tiny_model, SEQS, STARTS, token_budget=10_000, **kwargs)
    small = capture_resid_pre(tiny_model, SEQS, STARTS, token_budget=1, **kwargs)
    torch.testing.assert_close(big, small, atol=1e-5, rtol=1e-5)


def test_equals_bridge_cache(tiny_model, tokenizer) -> None:
    bridge = load_bridge(tiny_model, tokenizer, "HuggingFaceTB/SmolLM2-135M-Instruct")
    got = capture_resid_pre(tiny_model, SEQS, STARTS, layers=[0, 3], n_positions=2, progress=False)
    for i, (seq, start) in enumerate(zip(SEQS, STARTS, strict=True)):
        with torch.no_grad():
            _, cache = bridge.run_with_cache(torch.tensor([seq]))
        for li, layer in enumerate([0, 3]):
            want = cache[f"blocks.{layer}.hook_resid_pre"][0, start : start + 2]
            torch.testing.assert_close(got[i, li], want, atol=1e-5, rtol=1e-4)


def test_positions_past_the_end_are_an_error(tiny_model) -> None:
    with pytest.raises(ValueError, match="sequence 1"):
        capture_resid_pre(tiny_model, SEQS, [3, 5, 6], layers=[0], n_positions=2, progress=False)
