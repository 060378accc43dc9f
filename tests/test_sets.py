"""sets: folders of per-layer files read one layer at a time, hub ids from the local HF
cache, the input-hook override; and one transcoder written in every format and convention
gives the same features on the packaged model. The writers are in test_formats.py, with their
sources; circuit-tracer's layouts are tested in test_circuit_tracer.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from test_formats import (
    _weights,
    saelens6_cfg,
    write_circuit_tracer,
    write_saelens,
    write_sparsify,
    write_transcoder_circuits,
)
from test_transcoder import random_transcoder

from steerpipe.config import StageError
from steerpipe.lm.hooks import mlp_modules, norm_gain
from steerpipe.transcoders.sets import iter_layers, load_layers, resolve_source
from steerpipe.transcoders.transcoder import Transcoder, on_transcoder, save_transcoder


def test_load_layers_and_override(tmp_path: Path) -> None:
    for layer in (1, 3):
        save_transcoder(random_transcoder(layer=layer), tmp_path / f"tc_{layer:02d}.safetensors")
    loaded = load_layers(tmp_path, "tc_{layer:02d}.safetensors", [3, 1])
    assert {k: v.input_hook for k, v in loaded.items()} == {3: "mlp.hook_in", 1: "mlp.hook_in"}
    over = load_layers(tmp_path, "tc_{layer:02d}.safetensors", [1], input_hook="hook_resid_mid")
    assert over[1].input_hook == "hook_resid_mid"
    assert over[1].meta["input_hook_from"] == "traces.input_hook"
    with pytest.raises(StageError, match="no transcoder for layer 2: .*tc_02.safetensors"):
        load_layers(tmp_path, "tc_{layer:02d}.safetensors", [2])
    (tmp_path / "tc_02.safetensors").write_bytes((tmp_path / "tc_01.safetensors").read_bytes())
    with pytest.raises(StageError, match="for layer 1, not 2"):
        load_layers(tmp_path, "tc_{layer:02d}.safetensors", [2])


def test_layers_load_one_at_a_time(tmp_path: Path) -> None:
    """A broken later file is not even opened until the earlier layers have been taken."""
    save_transcoder(random_transcoder(layer=1), tmp_path / "layer_1.safetensors")
    (tmp_path / "layer_2.safetensors").write_bytes(b"not a safetensors file")
    layers = iter_layers(tmp_path, "layer_{layer}.safetensors", [1, 2])
    assert next(layers).layer == 1
    with pytest.raises(Exception, match="header|safetensors|deserializ"):
        next(layers)


# --- one transcoder, every format and convention, the same features --------------------------


def _features(model, tc: Transcoder, ids: torch.Tensor) -> torch.Tensor:
    seen = []
    with on_transcoder(model, tc, lambda x, out: seen.append(tc.encode(x))), torch.no_grad():
        model(ids)
    return seen[0]


@pytest.mark.slow
def test_every_format_gives_the_same_features_on_the_packaged_model(tmp_path: Path) -> None:
    from steerpipe.lm.models import load_model

    model, tok = load_model()
    layer, d = 14, int(model.config.hidden_size)
    gain = norm_gain(mlp_modules(model, layer)[0]).detach()
    assert gain.min() < 0.01 < 0.2 < gain.max()  # SmolLM2's real, far-from-one gains
    g = torch.Generator().manual_seed(0)
    m = 256
    w_enc = torch.randn(d, m, generator=g) / 2
    b_dec = torch.randn(d, generator=g) / 20
    ref = Transcoder(  # ours: the HF MLP input, centred
        w_enc,
        torch.randn(m, generator=g) / 4,
        torch.randn(m, d, generator=g) / 8,
        b_dec,
        torch.randn(d, generator=g) / 8,
        layer=layer,
    )
    # The same map of the normalised residual before the gain, and of the uncentred input.
    w_norm = gain[:, None] * ref.W_enc
    b_enc0 = ref.b_enc - ref.b_dec @ ref.W_enc
    ct_out = {"W_dec": ref.W_dec, "b_dec": ref.b_dec_out}
    save_transcoder(ref, tmp_path / "ours/layer_14.safetensors")
    tc_state = {"W_enc": w_norm, "b_enc": b_enc0, "W_dec": ref.W_dec}
    tc_state |= {"b_dec": torch.zeros(d), "b_dec_out": ref.b_dec_out}
    (tmp_path / "circuits").mkdir()
    write_transcoder_circuits(
        tmp_path / "circuits/tc.pt",
        tc_state,
        hook_point="blocks.14.ln2.hook_normalized",
        out_hook_point="blocks.14.hook_mlp_out",
        d_in=d,
        d_sae=m,
    )
    write_circuit_tracer(
        tmp_path / "ct_norm",
        {14: {"W_enc": w_norm.T.contiguous(), "b_enc": b_enc0, **ct_out}},
        feature_input_hook="ln2.hook_normalized",
        feature_output_hook="hook_mlp_out",
    )
    write_circuit_tracer(
        tmp_path / "ct_in", {14: {"W_enc": ref.W_enc.T.contiguous(), "b_enc": b_enc0, **ct_out}}
    )
    sl = {"W_enc": ref.W_enc, "b_enc": b_enc0, "W_dec": ref.W_dec, "b_dec": ref.b_dec_out}
    cfg6 = saelens6_cfg("blocks.14.mlp.hook_in", d_in=d, d_sae=m, d_out=d)
    write_saelens(tmp_path / "sl6/layer_14", sl, cfg6)
    cfg5 = {
        "d_in": d,
        "d_sae": m,
        "d_out": d,
        "hook_name": "blocks.14.ln2.hook_normalized",
        "apply_b_dec_to_input": False,
    }
    write_saelens(tmp_path / "sl5/layer_14", {**sl, "W_enc": w_norm}, cfg5)
    sp = {"encoder.weight": ref.W_enc.T.contiguous(), "encoder.bias": b_enc0}
    write_sparsify(
        tmp_path / "sp/layers.14.mlp", {**sp, **ct_out}, d_in=d, num_latents=m, k=m
    )  # k = all latents: TopK of the ReLU is the ReLU
    cfg_hf = saelens6_cfg("blocks.14.hook_mlp_in", d_in=d, d_sae=m, d_out=d)
    cfg_hf["metadata"]["hf_hook_name"] = "model.layers.14.mlp.input"  # as Gemma Scope 2's say
    write_saelens(tmp_path / "sl_hf/layer_14", sl, cfg_hf)
    zero = torch.zeros(m)  # JumpReLU at 0 is the ReLU
    (tmp_path / "gs").mkdir()
    np.savez(tmp_path / "gs/layer_14.npz", **{k: v.numpy() for k, v in sl.items()}, threshold=zero)
    gs2 = {"w_enc": ref.W_enc, "w_dec": ref.W_dec, "b_enc": b_enc0, "b_dec": ref.b_dec_out}
    save_file({**gs2, "threshold": zero}, str(tmp_path / "gs/layer_14.safetensors"))
    for name in ("npz", "safetensors"):
        files = [f"layer_14.{name}"] * 15  # circuit-tracer's list: one file per layer
        (tmp_path / f"gs_{name}").mkdir()
        (tmp_path / f"gs_{name}/config.yaml").write_text(
            yaml.safe_dump(
                {
                    "model_kind": "transcoder_set",
                    "feature_input_hook": "mlp.hook_in",
                    "feature_output_hook": "hook_mlp_out",
                    "transcoders": [f"../gs/{f}" for f in files],
                }
            )
        )
    sources = {
        "ours": ("ours", "layer_{layer}.safetensors"),
        "saelens6 hf_hook_name": ("sl_hf", "layer_{layer}"),
        "circuit-tracer Gemma Scope .npz": ("gs_npz", ""),
        "circuit-tracer Gemma Scope 2": ("gs_safetensors", ""),
        "transcoder_circuits": ("circuits", "tc.pt"),
        "circuit-tracer ln2.hook_normalized": ("ct_norm", "layer_{layer}.safetensors"),
        "circuit-tracer mlp.hook_in": ("ct_in", "layer_{layer}.safetensors"),
        "saelens6": ("sl6", "layer_{layer}"),
        "saelens5": ("sl5", "layer_{layer}"),
        "sparsify": ("sp", "layers.{layer}.mlp"),
    }
    ids = torch.tensor([tok("Is a whale a mammal? Let's think step by step.").input_ids])
    want = _features(model, ref, ids)
    assert (want > 0).float().mean() > 0.05
    for name, (folder, file) in sources.items():
        (tc,) = iter_layers(tmp_path / folder, file, [14])
        got = _features(model, tc, ids)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3, msg=name)
    # The original's file read at the HF MLP input (the old silent bug) is far off.
    (wrong,) = iter_layers(tmp_path / "circuits", "tc.pt", [14], input_hook="mlp.hook_in")
    err = (_features(model, wrong, ids) - want).norm() / want.norm()
    assert err > 0.5


def test_hub_transcoders_come_from_the_local_cache(tmp_path: Path, monkeypatch) -> None:
    """A hub id resolves to its snapshot in the HF cache without asking the hub; the TopK set
    without k is k = 128 for facebook/crv-8b-instruct-transcoders, as circuit-tracer says."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hub/models--facebook--crv-8b-instruct-transcoders"
    snapshot = repo / "snapshots" / ("a" * 40)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text("a" * 40)
    w = _weights(m=256)
    ct = {"W_enc": w["W_enc"].T.contiguous(), "W_dec": w["W_dec"], "b_enc": w["b_enc"]}
    write_circuit_tracer(snapshot, {0: {**ct, "b_dec": w["b_dec"]}}, activation="topk")
    folder = resolve_source(
        "facebook/crv-8b-instruct-transcoders",
        "layer_{layer}.safetensors",
        [0],
        cache_dir=tmp_path / "hub",
    )
    assert folder == snapshot
    (tc,) = iter_layers(folder, "layer_{layer}.safetensors", [0])
    assert tc.activation == "topk" and tc.k == 128
    with pytest.raises(StageError, match="not in the local HF cache, and HF_HUB_OFFLINE is set"):
        resolve_source("facebook/other", "layer_{layer}.safetensors", [0], cache_dir=tmp_path)
    with pytest.raises(StageError, match="not in the local HF cache"):  # a layer not fetched
        resolve_source(
            "facebook/crv-8b-instruct-transcoders",
            "layer_{layer}.safetensors",
            [9],
            cache_dir=tmp_path / "hub",
        )
    with pytest.raises(StageError, match="neither a folder nor a hub repo id"):
        resolve_source("no/such/folder", "x", [0])
