"""shared_layers: a forward that starts at a layer from that layer's recorded input is the full
forward, and rows of one prompt sharing the layers below their vectors get the logits and the
KV cache of one steered forward (Llama, Qwen2, and Gemma 2 with its sliding-window layers)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_family
from transformers import (
    DynamicCache,
    Gemma2Config,
    Gemma2ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from steerpipe.lm.cache import GrowingCache
from steerpipe.lm.hooks import Steer, add_to_resid_pre, batch_deltas, decoder_layers, on_resid_pre
from steerpipe.lm.prefill import after_prefix, left_pad
from steerpipe.lm.shared_layers import forward_shared, starting_at, steering

VOCAB = 300
A = [5, 17, 40, 3, 99, 250, 8, 61, 7, 12]
B = [9, 140, 33, 71, 2, 11]


def _vec(seed: int) -> torch.Tensor:
    return 3 * torch.randn(64, generator=torch.Generator().manual_seed(seed))


# rows of two prompts: plain, steered at layers 0, 1 and 3, two vectors at layer 1
STEERS = [None, Steer(1, _vec(1)), Steer(3, _vec(2)), Steer(1, _vec(3)), Steer(0, _vec(4))]
STEERS += [Steer(3, _vec(5)), None, Steer(1, _vec(6))]
PROMPTS = [A] * 5 + [B] * 3


def _one_forward(model, ids, mask, steers, positions=None, cache=None):
    with torch.no_grad(), add_to_resid_pre(model, batch_deltas(steers, 64)):
        return model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=cache is not None,
        ).logits


def test_starting_at_from_the_recorded_input_is_the_full_forward(tiny_model) -> None:
    ids, mask = left_pad([A, B], pad_id=2)
    seen = {}
    with torch.no_grad(), on_resid_pre(tiny_model, {2: lambda h: seen.setdefault(2, h)}):
        want = tiny_model(input_ids=ids, attention_mask=mask).logits
    calls = []
    first = decoder_layers(tiny_model)[0].mlp
    handle = first.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad(), starting_at(tiny_model, 2, seen[2]):
            got = tiny_model(input_ids=ids, attention_mask=mask).logits
    finally:
        handle.remove()
    assert torch.equal(got, want)
    assert calls == []  # layer 0 computed nothing
    # then the model is itself again, also after an exception inside
    with pytest.raises(RuntimeError), starting_at(tiny_model, 2, seen[2]):
        raise RuntimeError
    assert all("forward" not in vars(block) for block in decoder_layers(tiny_model))
    with torch.no_grad():
        assert torch.equal(tiny_model(input_ids=ids, attention_mask=mask).logits, want)


def test_steering_adds_to_the_injected_input(tiny_model) -> None:
    ids = torch.tensor([A])
    vec = _vec(9)
    seen = {}
    with torch.no_grad(), on_resid_pre(tiny_model, {1: lambda h: seen.setdefault(1, h)}):
        tiny_model(input_ids=ids)
    with torch.no_grad(), add_to_resid_pre(tiny_model, {1: vec}):
        want = tiny_model(input_ids=ids).logits
        with starting_at(tiny_model, 1, seen[1]):
            got = tiny_model(input_ids=ids).logits
    assert torch.equal(got, want)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
def test_shared_logits_equal_one_steered_forward(family, tiny_model) -> None:
    model = {
        "llama": lambda: tiny_model,
        "qwen2": lambda: tiny_family(Qwen2ForCausalLM, Qwen2Config, VOCAB, 4),
        # a window shorter than the prompts: layers 0 and 2 see 4 tokens back, 1 and 3 all
        "gemma2": lambda: tiny_family(Gemma2ForCausalLM, Gemma2Config, VOCAB, 4, sliding_window=4),
    }[family]()
    ids, mask = left_pad(PROMPTS, pad_id=2)
    mask[0, -3:] = 0  # a row of prompt A with another mask is a prompt of its own
    want = _one_forward(model, ids, mask, STEERS)
    got = forward_shared(model, ids, mask, *steering(model, STEERS))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the rows differ, so a mix-up of rows or layers would show
    assert (want[1] - want[3]).abs().max() > 1e-2 and (want[1] - want[2]).abs().max() > 1e-2


def test_shared_prefill_fills_the_cache_of_one_steered_forward(tiny_model) -> None:
    ids, mask = left_pad(PROMPTS, pad_id=2)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    want_cache = DynamicCache(config=tiny_model.config)
    want = _one_forward(tiny_model, ids, mask, STEERS, positions, want_cache)
    cache = GrowingCache(tiny_model.config, capacity=ids.shape[1] + 4)
    got = forward_shared(
        tiny_model, ids, mask, *steering(tiny_model, STEERS), position_ids=positions, cache=cache
    )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == ids.shape[1]
    for mine, theirs in zip(cache.layers, want_cache.layers, strict=True):
        torch.testing.assert_close(mine.keys, theirs.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mine.values, theirs.values, atol=1e-5, rtol=1e-5)


def _count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    return calls, handle


def test_rows_that_share_nothing_run_in_one_forward(tiny_model) -> None:
    """Distinct prompts, or rows steered at layer 0, would compute more shared; a sliding-window
    cache is not assembled from parts: each is one forward."""
    gemma2 = tiny_family(Gemma2ForCausalLM, Gemma2Config, VOCAB, 4, sliding_window=4)
    cases = [
        (tiny_model, [A, B], [Steer(2, _vec(1)), Steer(2, _vec(2))], None),
        (tiny_model, [A, A], [Steer(0, _vec(1)), Steer(0, _vec(2))], None),
        (gemma2, PROMPTS, STEERS, DynamicCache(config=gemma2.config)),
    ]
    for model, prompts, steers, cache in cases:
        ids, mask = left_pad(prompts, pad_id=2)
        calls, handle = _count_forwards(model)
        try:
            got = forward_shared(model, ids, mask, *steering(model, steers), cache=cache)
        finally:
            handle.remove()
        assert len(calls) == 1
        torch.testing.assert_close(got, _one_forward(model, ids, mask, steers))
    # rows of one prompt at layers 1 and 3: the plain run, then one run from each layer
    ids, mask = left_pad(PROMPTS, pad_id=2)
    calls, handle = _count_forwards(tiny_model)
    try:
        steers = [None, Steer(1, _vec(1)), Steer(3, _vec(2))] + [None] * 5
        forward_shared(tiny_model, ids, mask, *steering(tiny_model, steers))
    finally:
        handle.remove()
    assert len(calls) == 3


def test_a_shared_prefix_then_the_rests_fill_the_cache_of_one_forward(tiny_model) -> None:
    """Prefix columns that every row shares, then each row's rest on top of them (with the
    plain model's cache of the prefix): the logits and cache of one forward over both."""

    rows = [A + B[:k] for k in (2, 4, 6)]
    prompts = [rows[0], rows[1], rows[0], rows[2], rows[1]]
    steers = [None, None, Steer(1, _vec(1)), Steer(3, _vec(2)), Steer(1, _vec(3))]
    ids, mask = after_prefix(prompts, len(A), pad_id=2)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    want_cache = DynamicCache(config=tiny_model.config)
    want = _one_forward(tiny_model, ids, mask, steers, positions, want_cache)
    p = len(A)
    plain = DynamicCache(config=tiny_model.config)
    with torch.no_grad():
        tiny_model(input_ids=ids[:1, :p], cache=plain, use_cache=True)
    cache = GrowingCache(tiny_model.config)
    starts, hooks = steering(tiny_model, steers)
    head = dict(position_ids=positions[:, :p], cache=cache)
    forward_shared(tiny_model, ids[:, :p], mask[:, :p], starts, hooks, **head)
    with pytest.raises(ValueError, match="plain_past"):
        forward_shared(tiny_model, ids[:, p:], mask, starts, hooks, cache=cache)
    tail = dict(position_ids=positions[:, p:], cache=cache, plain_past=plain)
    got = forward_shared(tiny_model, ids[:, p:], mask, starts, hooks, **tail)
    torch.testing.assert_close(got, want[:, p:], atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(cache.layers, want_cache.layers, strict=True):
        torch.testing.assert_close(mine.keys, theirs.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mine.values, theirs.values, atol=1e-5, rtol=1e-5)
