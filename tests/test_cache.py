"""cache: a KV cache that grows in place gives the numbers HF's DynamicCache gives."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from steerpipe.lm.cache import GrowingCache


def _decode(model, cache, ids, mask, steps: int) -> torch.Tensor:
    """Logits of a prefill and ``steps`` greedy decoding steps through ``cache``."""
    out = []
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True).logits
        out.append(logits[:, -1])
        for _ in range(steps):
            token = out[-1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            logits = model(input_ids=token, attention_mask=mask, cache=cache, use_cache=True)
            out.append(logits.logits[:, -1])
    return torch.stack(out, 1)


def test_growing_cache_equals_dynamic_cache_bit_for_bit(tiny_model) -> None:
    model = tiny_model  # conftest's: sdpa, random norm gains
    ids = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    want = _decode(model, DynamicCache(config=model.config), ids, mask, 12)
    # capacity 8 is outgrown after 3 steps: the buffer is doubled with its contents
    cache = GrowingCache(model.config, capacity=8)
    assert torch.equal(_decode(model, cache, ids, mask, 12), want)
    assert cache.get_seq_length() == 5 + 12
    assert cache.layers[0].keys.shape[-2] == 17


def test_decoding_within_capacity_writes_in_place(tiny_model) -> None:
    model = tiny_model
    cache = GrowingCache(model.config, capacity=20)
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    _decode(model, cache, ids, mask, 1)
    buffer = cache.layers[0].keys.data_ptr()
    _decode(model, cache, torch.tensor([[8]]), torch.ones(1, 5, dtype=torch.long), 10)
    assert cache.layers[0].keys.data_ptr() == buffer  # no copy per token, unlike torch.cat
    assert cache.get_seq_length() == 3 + 1 + 1 + 10


def test_rows_selected_after_prefill_continue_as_in_dynamic_cache(tiny_model) -> None:
    # generate's shared prefill copies a prompt's cache to each of its samples' rows
    model = tiny_model
    ids, mask = torch.tensor([[5, 6, 7], [9, 8, 7]]), torch.ones(2, 3, dtype=torch.long)
    pick = torch.tensor([0, 0, 1])
    caches = [DynamicCache(config=model.config), GrowingCache(model.config, capacity=16)]
    outs = []
    for cache in caches:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True)
        cache.batch_select_indices(pick)
        step = torch.tensor([[11], [12], [13]])
        outs.append(_decode(model, cache, step, torch.ones(3, 4, dtype=torch.long), 5))
    assert torch.equal(outs[0], outs[1])


def test_dropping_rows_keeps_the_others_numbers_and_writes_in_place(tiny_model) -> None:
    # generation drops the rows that have finished: the rest continue as in HF's DynamicCache
    model = tiny_model
    ids = torch.tensor([[0, 5, 6, 7], [9, 8, 7, 6], [4, 4, 3, 2]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    keep = torch.tensor([0, 2])
    caches = [DynamicCache(config=model.config), GrowingCache(model.config, capacity=16)]
    outs = []
    for cache in caches:
        _decode(model, cache, ids, mask, 2)
        cache.batch_select_indices(keep)
        buffer = cache.layers[0].keys.data_ptr()
        step = torch.tensor([[11], [13]])
        outs.append(_decode(model, cache, step, torch.cat([mask[keep], torch.ones(2, 3)], 1), 4))
    assert torch.equal(outs[0], outs[1])
    assert caches[1].layers[0].keys.data_ptr() == buffer  # the selected rows' buffer, in place
    assert caches[1].get_seq_length() == 4 + 2 + 1 + 4
