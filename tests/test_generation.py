"""generation: batched equals unbatched, steering reaches every decoded token."""

from __future__ import annotations

import torch

from steerpipe.generation import Steer, generate, left_pad
from steerpipe.hooks import add_to_resid_pre

PROMPTS = [[1, 30, 500, 7000, 12], [1, 99, 4], [1, 5, 6, 7, 8, 9, 10, 11]]
GREEDY = {"max_new_tokens": 6, "temperature": 0.0, "progress": False}


def test_left_pad() -> None:
    ids, mask = left_pad([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]]
    assert mask.tolist() == [[1, 1], [0, 1]]


def test_batched_greedy_equals_unbatched(tiny_model) -> None:
    batched = generate(tiny_model, PROMPTS, batch_size=8, **GREEDY)
    alone = [generate(tiny_model, [p], batch_size=1, **GREEDY)[0] for p in PROMPTS]
    assert batched == alone
    assert all(len(t) == 6 or t[-1] == 2 for t in batched)


def _no_cache_greedy(model, prompt, layer, vec, n):
    """Reference: a full forward per token with the hook, no KV cache."""
    ids = list(prompt)
    with add_to_resid_pre(model, {layer: vec}):
        for _ in range(n):
            logits = model(torch.tensor([ids]), use_cache=False).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


def test_steering_acts_on_every_decoded_token(tiny_model) -> None:
    vec = 4 * torch.randn(64, generator=torch.Generator().manual_seed(3))
    steered = generate(tiny_model, PROMPTS, steers=[Steer(1, vec)] * 3, batch_size=8, **GREEDY)
    for prompt, got in zip(PROMPTS, steered, strict=True):
        want = _no_cache_greedy(tiny_model, prompt, 1, vec, 6)
        assert got == want[: len(got)]
    assert steered != generate(tiny_model, PROMPTS, batch_size=8, **GREEDY)


def test_hook_sees_each_decode_step(tiny_model) -> None:
    lengths: list[int] = []
    layer = tiny_model.get_decoder().layers[0]
    handle = layer.register_forward_pre_hook(
        lambda m, a, k: lengths.append((a[0] if a else k["hidden_states"]).shape[1]),
        with_kwargs=True,
    )
    try:
        generate(tiny_model, [PROMPTS[0]], steers=[Steer(0, torch.ones(64))], **GREEDY)
    finally:
        handle.remove()
    # prefill over the prompt, then one call per new token with the KV cache
    assert lengths[0] == len(PROMPTS[0])
    assert lengths[1:] == [1] * (len(lengths) - 1) and len(lengths) >= 5


def test_control_rows_in_a_mixed_batch_are_unsteered(tiny_model) -> None:
    vec = 4 * torch.ones(64)
    mixed = generate(tiny_model, PROMPTS, steers=[None, Steer(2, vec), None], **GREEDY)
    plain = generate(tiny_model, PROMPTS, **GREEDY)
    assert mixed[0] == plain[0] and mixed[2] == plain[2]


def test_sampling_is_reproducible(tiny_model) -> None:
    kwargs = {"max_new_tokens": 8, "temperature": 1.0, "top_p": 0.95, "progress": False}
    a = generate(tiny_model, PROMPTS * 2, seed=5, **kwargs)
    b = generate(tiny_model, PROMPTS * 2, seed=5, **kwargs)
    c = generate(tiny_model, PROMPTS * 2, seed=6, **kwargs)
    assert a == b
    assert a != c


def test_batch_hook_is_told_the_rows(tiny_model) -> None:
    from contextlib import contextmanager

    seen: list[list[int]] = []

    @contextmanager
    def hook(rows):
        seen.append(rows)
        yield

    generate(tiny_model, PROMPTS, batch_size=2, batch_hook=hook, **GREEDY)
    # sorted by length: rows 1 (3 tokens) and 0 (5), then row 2 (8)
    assert seen == [[1, 0], [2]]
