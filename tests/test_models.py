"""models: loading by name, random init from a config folder, plain errors, bridge agreement."""

from __future__ import annotations

import copy

import pytest
import torch

from steerpipe.config import StageError
from steerpipe.lm.models import (
    column_major,
    load_bridge,
    load_model,
    parse_dtype,
    supported_architectures,
)


def test_random_init_from_config_folder(tiny_model_dir) -> None:
    a, tok = load_model(str(tiny_model_dir), random_init=True, seed=1)
    b, _ = load_model(str(tiny_model_dir), random_init=True, seed=1)
    assert a.config.num_hidden_layers == 4 and a.config._attn_implementation == "sdpa"
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(a(ids).logits, b(ids).logits)
    assert tok.pad_token_id is not None


def test_bfloat16(tiny_model_dir) -> None:
    model, _ = load_model(str(tiny_model_dir), random_init=True, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert model.lm_head.weight.is_contiguous()  # column_major is for float32 only


def test_cpu_float32_weights_are_column_major_tied_and_compute_the_same(
    tmp_path, tokenizer
) -> None:
    from transformers import LlamaConfig

    from steerpipe.lm.generation import generate

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path), random_init=True, seed=3)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 * 7 + 1
    for m in linears:
        assert m.weight.t().is_contiguous() and not m.weight.is_contiguous()
    # the tie survives: the embedding reads the same (column-major) storage as the unembedding
    assert model.lm_head.weight is model.model.embed_tokens.weight
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data = m.weight.data.contiguous()
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), plain.parameters(), strict=True)
    )
    ids = torch.randint(0, len(tokenizer), (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)
    prompts = ids.tolist()
    kwargs = {"max_new_tokens": 6, "temperature": 0.0, "top_p": 1.0, "progress": False}
    assert generate(model, prompts, **kwargs) == generate(plain, prompts, **kwargs)
    column_major(plain)
    assert all(
        m.weight.t().is_contiguous() for m in plain.modules() if isinstance(m, torch.nn.Linear)
    )
    storage = [w.data_ptr() for w in plain.parameters()]
    column_major(plain)  # again: nothing is copied
    assert [w.data_ptr() for w in plain.parameters()] == storage


def test_device_map_loads_the_same_model(tiny_model, tmp_path, tokenizer, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    real = AutoModelForCausalLM.from_pretrained
    seen: list[object] = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    placed, _ = load_model(str(tmp_path), device_map="auto")
    plain, _ = load_model(str(tmp_path))
    assert seen == ["auto", None]  # accelerate places it (all on the CPU here: no GPU)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(placed(ids).logits, plain(ids).logits)
    with pytest.raises(StageError, match="device_map"):
        load_model(str(tmp_path), random_init=True, device_map="auto")


def test_unsupported_architecture_is_named(tmp_path, tokenizer) -> None:
    from transformers import DiffLlamaConfig

    DiffLlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(StageError, match=r"is a DiffLlamaForCausalLM, which TransformerLens"):
        load_model(str(tmp_path), random_init=True)


def test_supported_architectures_are_read_once_per_version(tmp_path, monkeypatch) -> None:
    """Importing TransformerLens for its list takes about 5 s; every stage that loads a model
    checks it, so the list is kept in the cache, one file per TransformerLens version."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    monkeypatch.setenv("STEERPIPE_CACHE", str(tmp_path))
    assert supported_architectures() == set(SUPPORTED_ARCHITECTURES)
    (kept,) = tmp_path.glob("transformer-lens-*-architectures.json")
    kept.write_text('["MadeUpForCausalLM"]')
    assert supported_architectures() == {"MadeUpForCausalLM"}  # read back, not imported again


def test_bad_dtype() -> None:
    with pytest.raises(StageError, match="model.dtype"):
        parse_dtype("int8")


def test_uncached_hub_id_says_so(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test touches the network
    with pytest.raises(StageError, match="nor in the local Hugging Face cache.*HF_HUB_OFFLINE"):
        load_model("no-such-org/no-such-model-xyz")


@pytest.mark.slow
def test_packaged_model_agrees_with_bridge() -> None:
    model, tok = load_model()
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    bridge = load_bridge(model, tok)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        want = bridge(ids)
        got = model(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert model.config._attn_implementation == "sdpa"  # the bridge wrapped a copy
