"""gguf_weights: a .gguf file as model.name, converted once to a cached folder.

The test writes a tiny Llama as a GGUF file with the ``gguf`` package, in llama.cpp's layout
(tensor names, and q/k rows permuted as ``LlamaModel.permute`` in llama.cpp's
``convert_hf_to_gguf.py`` does; transformers' ``modeling_gguf_pytorch_utils.py`` reverses it),
with the packaged SmolLM2 file's tokenizer metadata, then loads it as ``model.name``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGUFWriter
from tiny import tiny_config

from steerpipe.config import StageError
from steerpipe.lm.gguf_weights import gguf_folder, packaged_smollm2_gguf
from steerpipe.lm.models import load_model, randomize_norms


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's q/k rows to llama.cpp's rotary layout (llama.cpp convert_hf_to_gguf.py)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_gguf(model: torch.nn.Module, path: Path) -> None:
    cfg = model.config
    source = GGUFReader(packaged_smollm2_gguf())
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)

    def field(key: str):  # noqa: ANN202
        return source.fields[key].contents()

    w.add_tokenizer_model(field("tokenizer.ggml.model"))
    w.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    w.add_token_list(field("tokenizer.ggml.tokens"))
    w.add_token_types(field("tokenizer.ggml.token_type"))
    w.add_token_merges(field("tokenizer.ggml.merges"))
    for kind in ("bos", "eos", "unknown", "padding"):
        w.add_uint32(f"tokenizer.ggml.{kind}_token_id", field(f"tokenizer.ggml.{kind}_token_id"))
    w.add_chat_template(field("tokenizer.chat_template"))
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    names = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        hf = f"model.layers.{i}."
        for ours, theirs in names.items():
            w.add_tensor(f"blk.{i}.{theirs}.weight", sd[hf + ours + ".weight"])
        q, k = sd[hf + "self_attn.q_proj.weight"], sd[hf + "self_attn.k_proj.weight"]
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(q, cfg.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(k, cfg.num_key_value_heads))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> tuple[torch.nn.Module, Path]:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tokenizer), n_layers=2)).eval()
    randomize_norms(model)
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    write_gguf(model, path)
    return model, path


@pytest.mark.slow
def test_a_gguf_file_loads_as_model_name(tiny_gguf, tokenizer, tmp_path, monkeypatch) -> None:
    source, path = tiny_gguf
    monkeypatch.setenv("STEERPIPE_CACHE", str(tmp_path))
    model, tok = load_model(str(path))
    ids = torch.tensor([tokenizer.encode("Two plus two is four, so the answer is 4.")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, rtol=0, atol=1e-5)
    text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n\n\nSo"
    assert tok.encode(text) == tokenizer.encode(text)
    assert tok.chat_template == tokenizer.chat_template
    # converted once: the folder is found again, and the GGUF is not read a second time
    folder = gguf_folder(path)
    assert folder.parent == tmp_path and (folder / "model.safetensors").exists()
    monkeypatch.setattr("steerpipe.lm.gguf_weights.AutoModelForCausalLM", None)
    again, _ = load_model(str(path))
    assert torch.equal(again.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_a_missing_or_unreadable_gguf_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STEERPIPE_CACHE", str(tmp_path))
    with pytest.raises(StageError, match="no such GGUF file"):
        load_model(str(tmp_path / "absent.gguf"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(StageError, match="transformers cannot read it"):
        load_model(str(tmp_path / "junk.gguf"))


def test_the_packaged_model_has_one_folder_per_wheel_version(tmp_path, monkeypatch) -> None:
    """Every virtual environment installs its own copy of the file; they share one folder."""
    from steerpipe.lm.gguf_weights import local_folder

    monkeypatch.setenv("STEERPIPE_CACHE", str(tmp_path))
    size = packaged_smollm2_gguf().stat().st_size
    (tmp_path / f"SmolLM2-135M-Instruct-{size}").mkdir()
    (tmp_path / f"SmolLM2-135M-Instruct-{size}" / "config.json").write_text("{}")
    assert local_folder("packaged:smollm2") == str(tmp_path / f"SmolLM2-135M-Instruct-{size}")
