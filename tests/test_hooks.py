"""hooks: the HF-side hooks see and change exactly what the bridge's hook points do."""

from __future__ import annotations

import pytest
import torch

from steerpipe.hooks import add_to_resid_pre, decoder_layers, on_resid_pre, parse_resid_pre
from steerpipe.models import load_bridge

IDS = torch.tensor([[1, 520, 33, 904, 77, 1500, 12]])


def test_parse_resid_pre() -> None:
    assert parse_resid_pre("blocks.11.hook_resid_pre") == 11
    with pytest.raises(ValueError):
        parse_resid_pre("blocks.11.hook_mlp_out")


def test_read_equals_bridge_hook_point(tiny_model, tokenizer) -> None:
    bridge = load_bridge(tiny_model, tokenizer, "HuggingFaceTB/SmolLM2-135M-Instruct")
    seen: dict[int, torch.Tensor] = {}

    def keep(layer):
        def fn(h):
            seen[layer] = h.clone()

        return fn

    n = len(decoder_layers(tiny_model))
    with on_resid_pre(tiny_model, {layer: keep(layer) for layer in range(n)}):
        tiny_model(IDS)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(IDS)
    for layer in range(n):
        torch.testing.assert_close(seen[layer], cache[f"blocks.{layer}.hook_resid_pre"])


def test_zero_delta_is_identity(tiny_model) -> None:
    ref = tiny_model(IDS).logits
    with add_to_resid_pre(tiny_model, {1: torch.zeros(64)}):
        out = tiny_model(IDS).logits
    assert torch.equal(out, ref)


def test_steered_logits_equal_bridge(tiny_model, tokenizer) -> None:
    bridge = load_bridge(tiny_model, tokenizer, "HuggingFaceTB/SmolLM2-135M-Instruct")
    vec = torch.randn(64, generator=torch.Generator().manual_seed(1))

    def bridge_hook(value, hook):
        return value + vec

    with torch.no_grad(), bridge.hooks(fwd_hooks=[("blocks.2.hook_resid_pre", bridge_hook)]):
        want = bridge(IDS)
    with add_to_resid_pre(tiny_model, {2: vec}):
        got = tiny_model(IDS).logits
    assert (got - tiny_model(IDS).logits).abs().max() > 1e-2  # the vector does something
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_per_row_delta_leaves_zero_rows_alone(tiny_model) -> None:
    ids = IDS.repeat(2, 1)
    deltas = torch.zeros(2, 64)
    deltas[1] = 3.0
    ref = tiny_model(ids).logits
    with add_to_resid_pre(tiny_model, {0: deltas}):
        out = tiny_model(ids).logits
    assert torch.equal(out[0], ref[0])
    assert not torch.allclose(out[1], ref[1])


def test_hook_removed_after_exception(tiny_model) -> None:
    ref = tiny_model(IDS).logits
    with pytest.raises(RuntimeError), add_to_resid_pre(tiny_model, {0: torch.ones(64)}):
        raise RuntimeError("boom")
    assert torch.equal(tiny_model(IDS).logits, ref)


def test_layer_out_of_range(tiny_model) -> None:
    with pytest.raises(ValueError, match="outside the model"), on_resid_pre(tiny_model, {9: print}):
        pass
