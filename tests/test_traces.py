"""traces: batched feature tracing equals one at a time and a no-cache reference."""

from __future__ import annotations

import torch
from test_transcoder import random_transcoder

from steerpipe.lm.generation import generate
from steerpipe.lm.hooks import decoder_layers
from steerpipe.transcoders.traces import trace_features

PROMPTS = [[1, 30, 500, 7000, 12], [1, 99, 4], [1, 5, 6, 7, 8, 9, 10, 11]]
TC = random_transcoder(layer=1)
TC2 = random_transcoder(layer=2, seed=1, input_hook="ln2.hook_normalized")  # before the gain


def trace(model, prompts, batch_size, n_steps=5):
    return trace_features(
        model, prompts, [TC, TC2], n_steps=n_steps, batch_size=batch_size, pad_id=2, progress=False
    )


def test_batched_traces_equal_one_at_a_time(tiny_model) -> None:
    batched = trace(tiny_model, PROMPTS, batch_size=3)
    for i, prompt in enumerate(PROMPTS):
        alone = trace(tiny_model, [prompt], batch_size=1)
        assert batched.tokens[i] == alone.tokens[0]
        assert batched.steps[i] == alone.steps[0] == len(alone.tokens[0])
        start = sum(batched.steps[:i])
        for layer in (1, 2):
            rows = batched.features[layer].to_dense()[start : start + batched.steps[i]]
            assert torch.allclose(rows, alone.features[layer].to_dense(), atol=1e-5)


def input_at_last(model, ids: list[int], module) -> torch.Tensor:
    """The input of ``module`` at the last token, from a full forward without the cache."""
    seen = {}
    handle = module.register_forward_hook(lambda m, a, o: seen.setdefault("x", a[0][0, -1].clone()))
    try:
        model(torch.tensor([ids]), use_cache=False)
    finally:
        handle.remove()
    return seen["x"]


def test_step_features_are_those_of_the_last_real_token(tiny_model) -> None:
    """Step t: the features at the last token of the prompt plus t generated tokens, as a
    full forward without the cache computes them (the original read pads of right-padding)."""
    traces = trace(tiny_model, PROMPTS, batch_size=3)
    start = 0
    for prompt, tokens, n in zip(PROMPTS, traces.tokens, traces.steps, strict=True):
        rows = traces.features[1].to_dense()[start : start + n]
        rows2 = traces.features[2].to_dense()[start : start + n]
        mlp, norm = decoder_layers(tiny_model)[1].mlp, decoder_layers(tiny_model)[2]
        norm = norm.post_attention_layernorm
        for t in range(n):
            want = TC.encode(input_at_last(tiny_model, prompt + tokens[:t], mlp))
            assert torch.allclose(rows[t], want, atol=1e-5)
            # layer 2's transcoder reads x / rms(x) before the gain: computed here by hand
            x = input_at_last(tiny_model, prompt + tokens[:t], norm)
            x = x / (x.pow(2).mean() + norm.variance_epsilon).sqrt()
            assert torch.allclose(rows2[t], TC2.encode(x), atol=1e-5)
        start += n


def test_steps_end_at_eos(tiny_model) -> None:
    plain = generate(
        tiny_model, PROMPTS, max_new_tokens=5, temperature=0.0, top_p=1.0, progress=False
    )
    config = tiny_model.generation_config
    old = config.eos_token_id
    config.eos_token_id = plain[1][1]  # the second token of row 1 now ends it
    try:
        traces = trace(tiny_model, PROMPTS, batch_size=3)
    finally:
        config.eos_token_id = old
    first_eos = plain[1].index(plain[1][1])
    assert traces.tokens[1] == plain[1][: first_eos + 1]
    assert traces.steps[1] == first_eos + 1
    assert traces.features[1].n_rows == sum(traces.steps)
    # generation dropped row 1 once it ended: the other rows' steps are recorded in two
    # pieces, which join to the steps of a batch in which nothing ends (up to the float
    # rounding of a batch of 2 rows against 3)
    endless = trace(tiny_model, PROMPTS, batch_size=3)
    assert traces.tokens[0] == endless.tokens[0] and traces.tokens[2] == endless.tokens[2]
    for layer in (1, 2):
        got, want = traces.features[layer].to_dense(), endless.features[layer].to_dense()
        n = traces.steps[0]
        torch.testing.assert_close(got[:n], want[:n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            got[-traces.steps[2] :], want[-endless.steps[2] :], atol=1e-5, rtol=1e-5
        )
