"""hooks: the HF-side hooks see and change exactly what the bridge's hook points do, around
the residual stream and around each block's MLP (on models with random norm gains)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_family
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from steerpipe.config import StageError
from steerpipe.lm.hooks import (
    HF_INPUT_POINTS,
    HF_OUTPUT_POINTS,
    INPUT_HOOKS,
    OUTPUT_HOOKS,
    add_to_resid_pre,
    decoder_layers,
    mlp_modules,
    norm_gain,
    normalized,
    on_mlp,
    on_resid_pre,
    parse_hf_hook,
    parse_hook,
    parse_resid_pre,
)
from steerpipe.lm.models import load_bridge

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


def mlp_io(model, layer: int, ids=IDS, **hooks: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) at the MLP hook points ``hooks`` name, from one forward of ``ids``."""
    seen = {}

    def keep(x, out):
        seen["in"], seen["out"] = x.clone(), out.clone()

    with on_mlp(model, layer, keep, **hooks), torch.no_grad():
        model(ids)
    return seen["in"], seen["out"]


def test_parse_hook() -> None:
    assert parse_hook("blocks.9.ln2.hook_normalized") == (9, "ln2.hook_normalized")
    assert parse_hook("mlp.hook_in") == (None, "mlp.hook_in")
    assert parse_hook("blocks.3.ln2.hook_out") == (3, "mlp.hook_in")  # the bridge's other name
    assert parse_hook("blocks.3.mlp.hook_out", output=True) == (3, "mlp.hook_out")
    with pytest.raises(StageError, match="'blocks.1.hook_resid_pre' is not an MLP input"):
        parse_hook("blocks.1.hook_resid_pre")
    with pytest.raises(StageError, match="is not an MLP output"):
        parse_hook("blocks.1.mlp.hook_in", output=True)


def test_parse_hf_hook() -> None:
    name = "model.layers.7.pre_feedforward_layernorm.output"  # Gemma Scope 2's hf_hook_point_in
    assert parse_hf_hook(name) == (7, "mlp.hook_in")
    assert parse_hf_hook("model.language_model.layers.2.mlp.input") == (2, "mlp.hook_in")
    out = "model.layers.7.post_feedforward_layernorm.output"
    assert parse_hf_hook(out, output=True) == (7, "hook_mlp_out")
    with pytest.raises(StageError, match="cfg: HF hook point .*post_attention_layernorm.output"):
        parse_hf_hook("model.layers.1.post_attention_layernorm.output", where="cfg")
    with pytest.raises(StageError, match="is not an MLP output"):
        parse_hf_hook(name, output=True)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_hf_hook_names_are_the_modules_they_name(family, tiny_model, tokenizer) -> None:
    """Each HF name's point is read exactly where the named module's input or output is."""
    model = tiny_model
    if family == "gemma2":
        model = tiny_family(Gemma2ForCausalLM, Gemma2Config, len(tokenizer))
    names = [(k, v, False) for k, v in HF_INPUT_POINTS.items()]
    names += [(k, v, True) for k, v in HF_OUTPUT_POINTS.items()]
    checked = 0
    for name, point, output in names:
        module_name, _, side = f"model.layers.1.{name}".rpartition(".")
        try:
            module = model.get_submodule(module_name)
        except AttributeError:  # Llama has no pre_feedforward_layernorm
            continue
        seen = {}

        def keep(m, args, out, side=side, seen=seen):
            seen["value"] = (args[0] if side == "input" else out).clone()

        handle = module.register_forward_hook(keep)
        try:
            hooks = {"output_hook" if output else "input_hook": point}
            x, y = mlp_io(model, 1, **hooks)
        finally:
            handle.remove()
        assert parse_hf_hook(f"model.layers.1.{name}", output=output) == (1, point)
        assert torch.equal(y if output else x, seen["value"]), name
        checked += 1
    assert checked == (5 if family == "gemma2" else 2)


@pytest.mark.parametrize(
    "family",
    ["llama", "qwen2", "gemma", "gemma2"],
)
def test_hook_points_match_the_bridge(family, tiny_model, tokenizer) -> None:
    """Each hook point, derived from the HF modules, is TransformerLens's point of that name,
    on models whose norm gains are random (Gemma's multiply by 1 + w)."""
    models = {
        "llama": (lambda: tiny_model, "HuggingFaceTB/SmolLM2-135M-Instruct"),
        "qwen2": (
            lambda: tiny_family(Qwen2ForCausalLM, Qwen2Config, len(tokenizer)),
            "Qwen/Qwen2-0.5B",
        ),
        "gemma": (
            lambda: tiny_family(GemmaForCausalLM, GemmaConfig, len(tokenizer)),
            "google/gemma-2b",
        ),
        "gemma2": (
            lambda: tiny_family(Gemma2ForCausalLM, Gemma2Config, len(tokenizer)),
            "google/gemma-2-2b",
        ),
    }
    make, name = models[family]
    model = make()
    bridge = load_bridge(model, tokenizer, name)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(IDS)
    for input_hook in INPUT_HOOKS:
        for output_hook in OUTPUT_HOOKS:
            x, y = mlp_io(model, 1, input_hook=input_hook, output_hook=output_hook)
            torch.testing.assert_close(x, cache[f"blocks.1.{input_hook}"], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(y, cache[f"blocks.1.{output_hook}"], atol=1e-5, rtol=1e-4)
    # the points differ, so the test above can tell them apart
    assert (cache["blocks.1.mlp.hook_in"] - cache["blocks.1.ln2.hook_normalized"]).abs().max() > 0.1
    norm, _, post = mlp_modules(model, 1)
    gain = norm_gain(norm)
    assert not torch.allclose(gain, torch.ones_like(gain))
    torch.testing.assert_close(
        cache["blocks.1.mlp.hook_in"], gain * cache["blocks.1.ln2.hook_normalized"]
    )
    if family == "gemma2":  # hook_mlp_out is after the post-MLP norm there
        assert post is not None
        assert (cache["blocks.1.hook_mlp_out"] - cache["blocks.1.mlp.hook_out"]).abs().max() > 0.1


def test_normalized_refuses_an_unknown_norm() -> None:
    with pytest.raises(StageError, match="cannot derive ln2.hook_normalized from a Identity"):
        normalized(torch.nn.Identity(), torch.zeros(2, 4))
    ln = torch.nn.LayerNorm(4)
    x = torch.randn(3, 4)
    want = (x - x.mean(-1, keepdim=True)) / x.std(-1, correction=0, keepdim=True)
    torch.testing.assert_close(normalized(ln, x), want, atol=1e-4, rtol=1e-4)
