"""activations: batched capture equals one-at-a-time capture and the bridge's hook points."""

from __future__ import annotations

import pytest
import torch

from steerpipe.lm.activations import capture_resid_pre, token_batches
from steerpipe.lm.models import load_bridge
from steerpipe.storage import read_tensors, tensor_file

SEQS = [
    [1, 5, 9, 300, 20, 41, 8, 77, 600],
    [1, 44, 3, 90, 12, 13],
    [1, 700, 701, 702, 703, 704, 705, 706, 707, 708, 709, 710],
]
STARTS = [3, 1, 6]


@pytest.mark.device
def test_batched_equals_one_at_a_time(model_on_device) -> None:
    kwargs = {"layers": [0, 2, 3], "n_positions": 3, "progress": False}
    batched = capture_resid_pre(model_on_device, SEQS, STARTS, token_budget=10_000, **kwargs)
    alone = torch.cat(
        [
            capture_resid_pre(model_on_device, [s], [st], **kwargs)
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


@pytest.mark.device
def test_equals_bridge_cache(model_on_device, tokenizer) -> None:
    model = model_on_device
    bridge = load_bridge(model, tokenizer, "HuggingFaceTB/SmolLM2-135M-Instruct")
    got = capture_resid_pre(model, SEQS, STARTS, layers=[0, 3], n_positions=2, progress=False)
    for i, (seq, start) in enumerate(zip(SEQS, STARTS, strict=True)):
        with torch.no_grad():
            _, cache = bridge.run_with_cache(torch.tensor([seq], device=model.device))
        for li, layer in enumerate([0, 3]):
            want = cache[f"blocks.{layer}.hook_resid_pre"][0, start : start + 2].cpu()
            torch.testing.assert_close(got[i, li], want, atol=1e-5, rtol=1e-4)


def test_positions_past_the_end_are_an_error(tiny_model) -> None:
    with pytest.raises(ValueError, match="sequence 1"):
        capture_resid_pre(tiny_model, SEQS, [3, 5, 6], layers=[0], n_positions=2, progress=False)


def test_token_batches() -> None:
    # longest first; a row longer than the budget still gets a batch of its own
    assert token_batches([3, 9, 4, 4, 2], 12) == [[1], [2, 3, 0], [4]]
    assert token_batches([3, 9, 4, 4, 2], 8) == [[1], [2, 3], [0, 4]]
    assert token_batches([], 8) == []


def test_streams_into_a_file(tiny_model, tmp_path) -> None:
    kwargs = {"layers": [0, 2], "n_positions": 2, "token_budget": 20, "progress": False}
    want = capture_resid_pre(tiny_model, SEQS, STARTS, **kwargs)
    path = tmp_path / "acts.safetensors"
    with tensor_file(path, "resid_pre", (3, 2, 2, 64), {"layers": [0, 2]}) as out:
        got = capture_resid_pre(tiny_model, SEQS, STARTS, out=out, **kwargs)
        assert got is out
    tensors, meta = read_tensors(path)
    assert torch.equal(tensors["resid_pre"], want) and meta == {"layers": [0, 2]}
    with pytest.raises(ValueError, match="out has shape"):
        capture_resid_pre(tiny_model, SEQS, STARTS, out=torch.zeros(3, 2, 2, 8), **kwargs)


def test_out_of_memory_halves_the_budget(tiny_model, monkeypatch) -> None:
    kwargs = {"layers": [1, 3], "n_positions": 2, "progress": False}
    seqs = SEQS * 3
    want = capture_resid_pre(tiny_model, seqs, STARTS * 3, token_budget=10_000, **kwargs)
    decoder = tiny_model.get_decoder()
    real = decoder.forward
    sizes: list[int] = []

    def small_memory(*args, **kw):
        sizes.append(kw["input_ids"].numel())
        if kw["input_ids"].numel() > 40:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kw)

    monkeypatch.setattr(decoder, "forward", small_memory)
    got = capture_resid_pre(tiny_model, seqs, STARTS * 3, token_budget=10_000, **kwargs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # 9 rows x 12 tokens fail, then 4 x 12 (48) fails, then batches of at most 24 tokens
    assert sizes[:2] == [108, 48] and max(sizes[2:]) <= 24

    def no_memory(*args, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(decoder, "forward", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        capture_resid_pre(tiny_model, SEQS[:1], STARTS[:1], **kwargs)
