"""circuit_tracer: circuit-tracer's per-layer sets in its own layout, Gemma Scope's ``.npz`` and
Gemma Scope 2's safetensors, each computing what circuit-tracer computes; bad files in one line.

Each fixture follows decoderesearch/circuit-tracer 0.5.0:
- circuit_tracer/transcoder/single_layer_transcoder.py: ``SingleLayerTranscoder`` (``encode``:
  ``F.linear(x, W_enc, b_enc)``; ``decode``: ``acts @ W_dec + b_dec``; ``compute_skip``:
  ``x @ W_skip.T``), ``to_safetensors`` and ``load_relu_transcoder`` (its own layout),
  ``load_gemma_scope_transcoder`` (``np.load`` of ``W_enc [d_model, d_transcoder]``, ``W_dec``,
  ``b_enc``, ``b_dec``, ``threshold``; W_enc transposed), ``load_gemma_scope_2_transcoder``
  (``w_enc`` transposed, ``w_dec``, ``threshold``, ``affine_skip_connection.T`` as W_skip);
- transcoder/activation_functions.py: ``JumpReLU`` (``x * (x > threshold)``), ``TopK``;
- utils/hf_utils.py: ``load_transcoders`` (the config.yaml fields; ``transcoders`` lists each
  layer's file).
The same loaders, installed from PyPI in a scratch environment, gave features and outputs
equal to these loaders' bit for bit on random weights (docs/experiment-b.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from test_formats import X, _check, _weights, write_circuit_tracer

from steerpipe.config import StageError
from steerpipe.transcoders.sets import iter_layers, read_log_frequency

D, M = 64, 128  # test_formats' widths


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
def test_circuit_tracer(tmp_path: Path, activation: str) -> None:
    w = _weights()
    tensors = {
        "W_enc": w["W_enc"].T.contiguous(),
        "W_dec": w["W_dec"].contiguous(),
        "b_enc": w["b_enc"],
        "b_dec": w["b_dec"],
        "W_skip": w["W_skip"],
    }
    config: dict = {}
    if activation == "jumprelu":  # read from the weights, as circuit-tracer does
        tensors["activation_function.threshold"] = w["threshold"]
    if activation == "topk":
        config = {"activation": "topk", "k": 16}
    write_circuit_tracer(tmp_path, {2: tensors}, **config)
    (tc,) = iter_layers(tmp_path, "layer_{layer}.safetensors", [2])
    pre = F.linear(X, tensors["W_enc"], tensors["b_enc"])
    if activation == "relu":
        f = F.relu(pre)
    elif activation == "jumprelu":
        f = pre * (pre > w["threshold"])
    else:
        gate = torch.zeros_like(pre).scatter_(-1, pre.topk(16, dim=-1).indices, 1)
        f = pre * gate
    _check(tc, f, f @ tensors["W_dec"] + tensors["b_dec"] + X @ tensors["W_skip"].T)
    assert (tc.layer, tc.input_hook, tc.output_hook) == (2, "mlp.hook_in", "mlp.hook_out")
    assert tc.activation == activation and read_log_frequency(tmp_path, "", 2) is None


def write_config(folder: Path, files: list[str], **config) -> None:
    """config.yaml naming each layer's file, as circuit-tracer's Gemma Scope sets do."""
    base = {
        "model_kind": "transcoder_set",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "hook_mlp_out",
        "transcoders": files,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump({**base, **config}))


def gemma_scope_arrays(seed: int) -> dict[str, np.ndarray]:
    """A Gemma Scope params.npz: W_enc [d_model, d_transcoder]."""
    w = _weights(seed)
    names = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
    return {k: w[k].numpy() for k in names}


def test_gemma_scope_npz(tmp_path: Path) -> None:
    for layer in range(3):
        np.savez(tmp_path / f"layer_{layer}.npz", **gemma_scope_arrays(layer))
    write_config(tmp_path, [f"layer_{i}.npz" for i in range(3)])
    (tc,) = iter_layers(tmp_path, "layer_{layer}.safetensors", [2])
    a = {k: torch.from_numpy(v) for k, v in gemma_scope_arrays(2).items()}
    pre = F.linear(X, a["W_enc"].T, a["b_enc"])  # load_gemma_scope_transcoder transposes W_enc
    f = pre * (pre > a["threshold"])
    _check(tc, f, f @ a["W_dec"] + a["b_dec"])
    assert (tc.layer, tc.input_hook, tc.output_hook) == (2, "mlp.hook_in", "hook_mlp_out")
    assert (tc.activation, tc.meta["layout"]) == ("jumprelu", "Gemma Scope .npz")
    assert read_log_frequency(tmp_path, "layer_{layer}.npz", 2) is None


@pytest.mark.parametrize("affine", [True, False])
def test_gemma_scope_2(tmp_path: Path, affine: bool) -> None:
    w = _weights()
    t = {"w_enc": w["W_enc"], "w_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"]}
    t["threshold"] = w["threshold"]
    if affine:
        t["affine_skip_connection"] = w["W_skip"]  # [d_in, d_out]
    save_file(t, str(tmp_path / "layer_1.safetensors"))
    write_config(tmp_path, ["layer_0.safetensors", "layer_1.safetensors"])
    (tc,) = iter_layers(tmp_path, "unused", [1])
    pre = F.linear(X, t["w_enc"].T, t["b_enc"])
    f = pre * (pre > t["threshold"])
    y = f @ t["w_dec"] + t["b_dec"]
    if affine:  # W_skip = affine_skip_connection.T; compute_skip: x @ W_skip.T
        y = y + X @ t["affine_skip_connection"].T.T
    _check(tc, f, y)
    assert (tc.layer, tc.activation, tc.meta["layout"]) == (1, "jumprelu", "Gemma Scope 2")
    assert (tc.W_skip is not None) == affine


def test_bad_gemma_scope_files_end_in_one_line(tmp_path: Path) -> None:
    arrays = gemma_scope_arrays(0)
    cases = {
        "text.npz": r"text.npz: not a readable NumPy .npz file",
        "cut.npz": r"cut.npz: not a readable NumPy .npz file",
        "one.npz": r"one.npz: not a readable NumPy .npz file \(one array",
        "nothreshold.npz": r"nothreshold.npz: no tensor threshold",
        "turned.npz": r"turned.npz: W_enc is \(128, 64\); this layout stores it \(64, 128\)",
        "gs2.safetensors": r"gs2.safetensors: no tensor threshold",
    }
    np.savez(tmp_path / "whole.npz", **arrays)
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "text.npz").write_bytes(b"not an archive\n")
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with open(tmp_path / "one.npz", "wb") as f:
        np.save(f, arrays["W_enc"])
    np.savez(tmp_path / "nothreshold.npz", **{k: v for k, v in arrays.items() if k != "threshold"})
    np.savez(tmp_path / "turned.npz", **{**arrays, "W_enc": arrays["W_enc"].T})
    gs2 = {"w_enc": torch.from_numpy(arrays["W_enc"]), "w_dec": torch.from_numpy(arrays["W_dec"])}
    gs2 |= {"b_enc": torch.from_numpy(arrays["b_enc"]), "b_dec": torch.from_numpy(arrays["b_dec"])}
    save_file(gs2, str(tmp_path / "gs2.safetensors"))
    for name, match in cases.items():
        write_config(tmp_path, [name])
        with pytest.raises(StageError, match=match) as excinfo:
            list(iter_layers(tmp_path, "unused", [0]))
        assert "\n" not in str(excinfo.value)


def test_unreadable_config_ends_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model_kind: [transcoder_set\nfeature_input_hook: x\n")
    with pytest.raises(StageError, match=r"config.yaml: not a readable YAML file \(") as excinfo:
        list(iter_layers(tmp_path, "unused", [0]))
    assert "\n" not in str(excinfo.value)
    (tmp_path / "config.yaml").write_text("- a list\n")
    with pytest.raises(StageError, match="config.yaml: not a circuit-tracer config"):
        list(iter_layers(tmp_path, "unused", [0]))
