"""formats: each format loads as its own library computes it, at the hook point its
fields name; bad files are refused in one line naming the file and the field.

Each fixture writer follows the source it names (read with the search tool):
- transcoder_circuits: jacobdunefsky/transcoder_circuits sae_training/sparse_autoencoder.py
  (``save_model``: ``torch.save({"cfg", "state_dict"})``, ``forward``) and config.py;
- circuit-tracer: decoderesearch/circuit-tracer circuit_tracer/transcoder/
  single_layer_transcoder.py (``to_safetensors``, ``load_transcoder``, ``encode``/``decode``,
  ``compute_skip``), transcoder/activation_functions.py (``JumpReLU``, ``TopK``) and
  utils/hf_utils.py (``load_transcoders``: the config.yaml fields);
- SAELens: jbloomAus/SAELens sae_lens/saes/sae.py (``SAEConfig.to_dict``, ``save_model``),
  sae_lens/saes/transcoder.py (``Transcoder``, ``SkipTranscoder``, ``JumpReLUTranscoder``,
  ``JumpReLUSkipTranscoder``) and sae_lens/loading/pretrained_sae_loaders.py
  (``handle_pre_6_0_config``: SAELens 5 fields; ``get_gemma_3_config_from_hf``: Gemma Scope 2's
  config, whose cfg.json below SAELens 6.54.12's ``save_model`` wrote);
- sparsify: EleutherAI/sparsify sparsify/sparse_coder.py (``save_to_disk``, ``encode``,
  ``decode``, ``forward``), sparsify/config.py (``SparseCoderConfig``), fused_encoder.py.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from test_transcoder import random_transcoder

from steerpipe.config import StageError
from steerpipe.transcoders.formats import load_transcoder
from steerpipe.transcoders.sets import iter_layers, read_log_frequency
from steerpipe.transcoders.transcoder import Transcoder, save_transcoder

D, M = 64, 128


def _weights(seed: int = 0, d: int = D, m: int = M) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(d, m, generator=g) / 8,
        "b_enc": torch.randn(m, generator=g) / 8,
        "W_dec": torch.randn(m, d, generator=g) / 8,
        "b_dec": torch.randn(d, generator=g) / 8,
        "W_skip": torch.randn(d, d, generator=g) / 16,
        "threshold": torch.rand(m, generator=g) / 4,
    }


# --- writers, as each library saves ----------------------------------------------------------


@dataclass
class LanguageModelSAERunnerConfig:  # stands in for transcoder_circuits' own class
    hook_point: str = "blocks.1.ln2.hook_normalized"
    out_hook_point: str | None = "blocks.1.hook_mlp_out"
    d_in: int = D
    d_sae: int = M
    is_transcoder: bool = True


def write_transcoder_circuits(path: Path, state: dict[str, torch.Tensor], **cfg) -> None:
    """torch.save as transcoder_circuits does, with its config class in sae_training.config."""
    module = types.ModuleType("sae_training.config")
    cls = type(
        "LanguageModelSAERunnerConfig",
        (LanguageModelSAERunnerConfig,),
        {"__module__": "sae_training.config"},
    )
    module.LanguageModelSAERunnerConfig = cls  # type: ignore[attr-defined]
    sys.modules["sae_training"] = types.ModuleType("sae_training")
    sys.modules["sae_training.config"] = module
    try:
        torch.save({"cfg": cls(**cfg), "state_dict": state}, path)
    finally:
        del sys.modules["sae_training.config"], sys.modules["sae_training"]  # not for the loader


def write_circuit_tracer(
    folder: Path, layers: dict[int, dict[str, torch.Tensor]], **config
) -> None:
    """config.yaml and layer_{i}.safetensors with W_enc, W_dec [d_transcoder, d_model]."""
    folder.mkdir(parents=True, exist_ok=True)
    base = {
        "model_name": "tiny",
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "mlp.hook_out",
    }
    (folder / "config.yaml").write_text(yaml.safe_dump({**base, **config}))
    for layer, tensors in layers.items():
        save_file(tensors, str(folder / f"layer_{layer}.safetensors"))


def write_saelens(folder: Path, tensors: dict[str, torch.Tensor], cfg: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))


def saelens6_cfg(hook: str, architecture: str = "transcoder", **more) -> dict:
    """``SAEConfig.to_dict()`` of SAELens 6: the hook only under ``metadata``."""
    return {
        "d_in": D,
        "d_sae": M,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": "6.5.1", "model_name": "tiny", "hook_name": hook},
        "architecture": architecture,
        "d_out": D,
        **more,
    }


def write_sparsify(folder: Path, tensors: dict[str, torch.Tensor], **cfg) -> None:
    """``save_to_disk``: sae.safetensors (the module's state) and cfg.json (config + d_in)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "sae.safetensors"))
    base = {
        "activation": "topk",
        "expansion_factor": 32,
        "normalize_decoder": True,
        "num_latents": M,
        "k": 16,
        "multi_topk": False,
        "skip_connection": "W_skip" in tensors,
        "transcode": True,
        "d_in": D,
    }
    (folder / "cfg.json").write_text(json.dumps({**base, **cfg}))


# --- each loader computes what its library computes ------------------------------------------

X = torch.randn(5, D, generator=torch.Generator().manual_seed(7))


def _check(tc: Transcoder, f_want: torch.Tensor, y_want: torch.Tensor) -> None:
    f = tc.encode(X)
    torch.testing.assert_close(f, f_want)
    torch.testing.assert_close(tc.decode(f, X), y_want)
    assert (f != 0).any() and (f == 0).any()


def test_transcoder_circuits(tmp_path: Path) -> None:
    w = _weights()
    b_out = torch.randn(D)
    path = tmp_path / "Llama_blocks.1.ln2.hook_normalized_128.pt"
    state = {"W_enc": w["W_enc"], "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    write_transcoder_circuits(path, {**state, "b_dec_out": b_out})
    torch.save(torch.linspace(-8, -1, M), path.with_name(path.stem + "_log_feature_sparsity.pt"))
    tc = load_transcoder(path)
    f = torch.relu((X - w["b_dec"]) @ w["W_enc"] + w["b_enc"])  # its forward
    _check(tc, f, f @ w["W_dec"] + b_out)
    assert (tc.layer, tc.input_hook, tc.output_hook) == (1, "ln2.hook_normalized", "hook_mlp_out")
    assert tc.meta["input_hook_from"] == "cfg.hook_point"
    assert torch.equal(read_log_frequency(tmp_path, path.name, 1), torch.linspace(-8, -1, M))


class _Evil:
    def __reduce__(self):
        return (print, ("code from the checkpoint ran",))


def test_checkpoint_with_code_is_refused(tmp_path: Path, capsys) -> None:
    torch.save({"cfg": _Evil(), "state_dict": {}}, tmp_path / "evil.pt")
    with pytest.raises(StageError, match="cannot read it safely"):
        load_transcoder(tmp_path / "evil.pt")
    assert "ran" not in capsys.readouterr().out


SAELENS_ARCHITECTURES = [
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
]


@pytest.mark.parametrize("version", [5, 6])
@pytest.mark.parametrize("architecture", SAELENS_ARCHITECTURES)
def test_saelens(tmp_path: Path, version: int, architecture: str) -> None:
    w = _weights()
    tensors = {k: w[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if "skip" in architecture:
        tensors["W_skip"] = w["W_skip"].T.contiguous()  # [d_out, d_in]
    if "jumprelu" in architecture:
        tensors["threshold"] = w["threshold"]
    if version == 6:
        cfg = saelens6_cfg("blocks.3.ln2.hook_normalized", architecture)
    else:  # SAELens 5: the hook at the top level, no metadata
        cfg = {
            "d_in": D,
            "d_sae": M,
            "d_out": D,
            "hook_point": "blocks.3.ln2.hook_normalized",
            "hook_name_out": "blocks.3.hook_mlp_out",
            "architecture": architecture,
            "activation_fn_str": "relu",
            "apply_b_dec_to_input": False,
            "sae_lens_version": "5.9.1",
        }
    write_saelens(tmp_path / "layer_3", tensors, cfg)
    save_file({"sparsity": torch.full((M,), -3.0)}, str(tmp_path / "layer_3/sparsity.safetensors"))
    tc = load_transcoder(tmp_path / "layer_3")
    pre = X @ w["W_enc"] + w["b_enc"]  # Transcoder.encode: no b_dec on the input
    f = F.relu(pre)
    if "jumprelu" in architecture:  # JumpReLUTranscoder.encode
        f = f * (pre > w["threshold"])
    y = f @ w["W_dec"] + w["b_dec"]
    if "skip" in architecture:  # SkipTranscoder.forward: x @ W_skip.T
        y = y + X @ tensors["W_skip"].T
    _check(tc, f, y)
    assert (tc.layer, tc.input_hook, tc.output_hook) == (3, "ln2.hook_normalized", "hook_mlp_out")
    assert tc.meta["format"] == f"saelens{version}"
    assert torch.equal(read_log_frequency(tmp_path, "layer_{layer}", 3), torch.full((M,), -3.0))


def gemma_scope_2_cfg(layer: int) -> dict:
    """cfg.json as SAELens 6.54.12's ``save_model`` wrote it for an affine Gemma Scope 2
    transcoder that ``SAE.from_pretrained`` built from ``get_gemma_3_config_from_hf``'s config
    (``handle_pre_6_0_config`` moves the hook fields into metadata)."""
    cfg = saelens6_cfg(f"blocks.{layer}.hook_mlp_in", "jumprelu_skip_transcoder")
    cfg["metadata"] |= {
        "sae_lens_version": "6.54.12",
        "sae_lens_training_version": None,
        "model_name": "google/gemma-3-270m",
        "hook_head_index": None,
        "prepend_bos": True,
        "dataset_path": "monology/pile-uncopyrighted",
        "context_size": 1024,
        "hf_hook_name": f"model.layers.{layer}.pre_feedforward_layernorm.output",
        "hook_name_out": f"blocks.{layer}.hook_mlp_out",
        "hf_hook_name_out": f"model.layers.{layer}.post_feedforward_layernorm.output",
        "neuronpedia_id": None,
    }
    return cfg


def test_saelens_gemma_scope_2_reads_the_hf_hook_names(tmp_path: Path) -> None:
    """``blocks.L.hook_mlp_in`` is TransformerLens's name for the norm's input; Gemma Scope 2
    gives it to the norm's output, which ``hf_hook_name`` names: that decides."""
    w = _weights()
    tensors = {k: w[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    tensors["W_skip"] = w["W_skip"].T.contiguous()  # the loader's affine_skip_connection.T
    write_saelens(tmp_path / "layer_4", tensors, gemma_scope_2_cfg(4))
    tc = load_transcoder(tmp_path / "layer_4")
    assert (tc.layer, tc.input_hook, tc.output_hook) == (4, "mlp.hook_in", "hook_mlp_out")
    assert tc.meta["input_hook_from"] == "cfg.json metadata.hf_hook_name"
    pre = X @ w["W_enc"] + w["b_enc"]
    f = F.relu(pre) * (pre > w["threshold"])
    _check(tc, f, f @ w["W_dec"] + w["b_dec"] + X @ tensors["W_skip"].T)

    no_hf = gemma_scope_2_cfg(4)
    del no_hf["metadata"]["hf_hook_name"]
    write_saelens(tmp_path / "b/layer_4", tensors, no_hf)
    with pytest.raises(StageError, match="hook_mlp_in' is ambiguous .* set traces.input_hook"):
        load_transcoder(tmp_path / "b/layer_4")
    (tc,) = iter_layers(tmp_path / "b", "layer_{layer}", [4], input_hook="mlp.hook_in")
    assert (tc.layer, tc.input_hook, tc.meta["input_hook_from"]) == (
        4,
        "mlp.hook_in",
        "traces.input_hook",
    )
    other = gemma_scope_2_cfg(4)
    other["metadata"]["hf_hook_name"] = "model.layers.5.pre_feedforward_layernorm.output"
    write_saelens(tmp_path / "c/layer_4", tensors, other)
    with pytest.raises(StageError, match="hook_name 'blocks.4.hook_mlp_in' and metadata.hf_hook"):
        load_transcoder(tmp_path / "c/layer_4")
    llama = gemma_scope_2_cfg(4)
    llama["metadata"]["hf_hook_name"] = "model.layers.4.post_attention_layernorm.output"
    write_saelens(tmp_path / "d/layer_4", tensors, llama)
    with pytest.raises(StageError, match="metadata.hf_hook_name: HF hook point"):
        load_transcoder(tmp_path / "d/layer_4")


def test_sparsify(tmp_path: Path) -> None:
    w = _weights()
    tensors = {
        "encoder.weight": w["W_enc"].T.contiguous(),
        "encoder.bias": w["b_enc"],
        "W_dec": w["W_dec"],
        "b_dec": w["b_dec"],
        "W_skip": w["W_skip"],
    }
    write_sparsify(tmp_path / "layers.5.mlp", tensors, k=16)
    tc = load_transcoder(tmp_path / "layers.5.mlp")
    pre = F.relu(F.linear(X, tensors["encoder.weight"], tensors["encoder.bias"]))
    top = pre.topk(16, dim=-1)  # fused_encoder: top-k of the ReLU
    f = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
    _check(tc, f, f @ w["W_dec"] + w["b_dec"] + X @ w["W_skip"].mT)
    assert (tc.layer, tc.input_hook, tc.output_hook) == (5, "mlp.hook_in", "mlp.hook_out")
    assert tc.activation == "topk_relu" and tc.k == 16


def test_own_format_round_trip(tmp_path: Path) -> None:
    tc = random_transcoder(layer=3, activation="jumprelu", skip=True, input_hook="hook_resid_mid")
    save_transcoder(tc, tmp_path / "tc.safetensors")
    back = load_transcoder(tmp_path / "tc.safetensors")
    assert (back.layer, back.input_hook, back.activation) == (3, "hook_resid_mid", "jumprelu")
    for k in ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out", "threshold", "W_skip"):
        assert torch.equal(getattr(back, k), getattr(tc, k)), k
    assert torch.equal(read_log_frequency(tmp_path, "tc.safetensors", 3), tc.log_frequency)


# --- bad input --------------------------------------------------------------------------------


def _one_line(excinfo: pytest.ExceptionInfo[StageError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_bad_files_name_the_file_and_the_field(tmp_path: Path) -> None:
    w = _weights()
    ct = {"W_enc": w["W_enc"].T.contiguous(), "W_dec": w["W_dec"], "b_enc": w["b_enc"]}
    ct["b_dec"] = w["b_dec"]
    cases: list[tuple[str, str]] = []

    def expect(path: Path, file: str, match: str) -> None:
        with pytest.raises(StageError, match=match) as excinfo:
            list(iter_layers(path, file, [0]))
        cases.append((_one_line(excinfo), str(path)))

    write_circuit_tracer(tmp_path / "a", {0: ct}, feature_input_hook=None)
    expect(tmp_path / "a", "layer_{layer}.safetensors", r"config.yaml: no field 'feature_input")
    write_circuit_tracer(tmp_path / "b", {0: {**ct, "W_enc": w["W_enc"]}})
    expect(
        tmp_path / "b", "layer_{layer}.safetensors", r"layer_0.safetensors: W_enc is \(64, 128\)"
    )
    write_circuit_tracer(tmp_path / "c", {0: ct}, activation="gelu")
    expect(tmp_path / "c", "layer_{layer}.safetensors", "activation 'gelu' is not known")
    write_circuit_tracer(tmp_path / "d", {0: ct}, activation="topk")
    expect(tmp_path / "d", "layer_{layer}.safetensors", "topk needs a field 'k'")
    write_circuit_tracer(tmp_path / "e", {0: ct}, model_kind="cross_layer_transcoder")
    expect(tmp_path / "e", "layer_{layer}.safetensors", "cross_layer_transcoder, but no W_enc_0")
    write_circuit_tracer(tmp_path / "e2", {0: ct}, model_kind="crosscoder")
    expect(tmp_path / "e2", "layer_{layer}.safetensors", "model_kind 'crosscoder' is not")
    sl = {k: w[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    no_hook = saelens6_cfg("blocks.0.mlp.hook_in")
    no_hook["metadata"].pop("hook_name")
    write_saelens(tmp_path / "f/layer_0", sl, no_hook)
    expect(tmp_path / "f", "layer_{layer}", r"cfg.json: no field 'metadata.hook_name'")
    write_saelens(tmp_path / "g/layer_0", sl, saelens6_cfg("blocks.0.hook_resid_pre"))
    expect(tmp_path / "g", "layer_{layer}", "'blocks.0.hook_resid_pre' is not an MLP input")
    sae = saelens6_cfg("blocks.0.mlp.hook_in", "standard")
    del sae["d_out"]
    write_saelens(tmp_path / "h/layer_0", sl, sae)
    expect(tmp_path / "h", "layer_{layer}", "architecture 'standard' is an SAE, not a transcoder")
    gated = saelens6_cfg("blocks.0.mlp.hook_in", "gated_transcoder")
    write_saelens(tmp_path / "q/layer_0", sl, gated)
    expect(tmp_path / "q", "layer_{layer}", "architecture 'gated_transcoder' is not known")
    write_saelens(
        tmp_path / "i/layer_0", sl, saelens6_cfg("blocks.0.mlp.hook_in", apply_b_dec_to_input=True)
    )
    expect(tmp_path / "i", "layer_{layer}", "apply_b_dec_to_input is true")
    bad_dec = saelens6_cfg("blocks.0.mlp.hook_in")
    write_saelens(tmp_path / "j/layer_0", {**sl, "W_dec": w["W_dec"].T.contiguous()}, bad_dec)
    expect(tmp_path / "j", "layer_{layer}", r"layer_0 \(layer 0\): W_dec has shape \(64, 128\)")
    norm = saelens6_cfg("blocks.0.mlp.hook_in", normalize_activations="layer_norm")
    write_saelens(tmp_path / "k/layer_0", sl, norm)
    expect(tmp_path / "k", "layer_{layer}", "normalize_activations 'layer_norm'")
    sp = {"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"]}
    sp |= {"W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    write_sparsify(tmp_path / "l/layers.0.mlp", sp, k=None)
    expect(tmp_path / "l", "layers.{layer}.mlp", r"cfg.json: no field 'k'")
    write_sparsify(tmp_path / "m/layers.0.mlp", sp, activation="groupmax")
    expect(tmp_path / "m", "layers.{layer}.mlp", "activation 'groupmax' is not supported")
    write_sparsify(tmp_path / "n/layers.0.mlp", sp, transcode=False)
    expect(tmp_path / "n", "layers.{layer}.mlp", "transcode is false: an SAE")
    old = random_transcoder(layer=0)
    save_transcoder(old, tmp_path / "o/layer_0.safetensors")
    from steerpipe.storage import read_tensors, write_tensors

    tensors, meta = read_tensors(tmp_path / "o/layer_0.safetensors")
    meta.pop("input_hook")
    write_tensors(tensors, tmp_path / "o/layer_0.safetensors", meta)
    expect(tmp_path / "o", "layer_{layer}.safetensors", "no 'input_hook' in its metadata")
    (tmp_path / "p").mkdir()
    write_transcoder_circuits(
        tmp_path / "p/tc.pt", {**sl, "b_dec_out": w["b_dec"]}, hook_point="ln2.hook_normalized"
    )
    expect(tmp_path / "p", "tc.pt", "hook_point 'ln2.hook_normalized' names no block")
    for message, path in cases:  # every message names the file it is about
        assert Path(path).name in message or "config.yaml" in message, message


@pytest.mark.parametrize("case", ["text", "truncated"])
def test_unreadable_transcoder_files_end_in_one_line(tmp_path: Path, case: str) -> None:
    """A transcoder_circuits checkpoint, our safetensors file, or a SAELens cfg.json that is
    another format or cut short: one line naming the file (issue 36), not torch's,
    safetensors' or json's traceback."""
    w = _weights()
    sl = {k: w[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    write_transcoder_circuits(tmp_path / "tc.pt", {**sl, "b_dec_out": w["b_dec"]})
    save_transcoder(random_transcoder(layer=0), tmp_path / "ours.safetensors")
    write_saelens(tmp_path / "sl", sl, saelens6_cfg("blocks.0.mlp.hook_in"))
    files = {
        tmp_path / "tc.pt": "PyTorch checkpoint",
        tmp_path / "ours.safetensors": "safetensors file",
        tmp_path / "sl/cfg.json": "JSON file",
    }
    for path, kind in files.items():
        data = path.read_bytes()
        path.write_bytes(b"not a file of that kind\n" if case == "text" else data[: len(data) // 2])
        target = path.parent if path.name == "cfg.json" else path
        with pytest.raises(StageError) as excinfo:
            load_transcoder(target)
        message = _one_line(excinfo)
        assert message.startswith(f"{path}: not a readable {kind} ("), message
