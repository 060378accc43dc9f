"""transcoders: steering keeps the model exact at strength 1, and every format loads safely."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

from steerpipe.config import StageError
from steerpipe.hooks import decoder_layers
from steerpipe.models import load_bridge
from steerpipe.transcoders import (
    Transcoder,
    feature_scale,
    load_layers,
    load_transcoder,
    save_transcoder,
    scale_features,
    steer_features,
)

IDS = torch.tensor([[1, 520, 33, 904, 77, 1500, 12], [1, 9, 8, 7, 6, 5, 4]])


def random_transcoder(layer: int = 1, d: int = 64, d_sae: int = 128, seed: int = 0) -> Transcoder:
    g = torch.Generator().manual_seed(seed)
    return Transcoder(
        W_enc=torch.randn(d, d_sae, generator=g) / 8,
        b_enc=torch.randn(d_sae, generator=g) / 8,
        W_dec=torch.randn(d_sae, d, generator=g) / 8,
        b_dec=torch.randn(d, generator=g) / 8,
        b_dec_out=torch.randn(d, generator=g) / 8,
        layer=layer,
        log_frequency=torch.linspace(-8, -1, d_sae),
    )


def mlp_io(model, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    seen = {}
    mlp = decoder_layers(model)[layer].mlp

    def keep(module, args, output):
        seen["in"], seen["out"] = args[0].clone(), output.clone()

    handle = mlp.register_forward_hook(keep)
    try:
        model(IDS)
    finally:
        handle.remove()
    return seen["in"], seen["out"]


def test_strength_one_is_exactly_the_model(tiny_model) -> None:
    tc = random_transcoder()
    ref = tiny_model(IDS).logits
    with steer_features(tiny_model, tc, torch.arange(0, 128, 2), 1.0):
        assert torch.equal(tiny_model(IDS).logits, ref)


def test_delta_mode_adds_the_feature_change(tiny_model) -> None:
    tc = random_transcoder()
    feats = torch.tensor([3, 17, 40, 99])
    x, y = mlp_io(tiny_model, 1)
    f = tc.encode(x)
    scaled = f.clone()
    scaled[..., feats] *= 2.0
    want = y + (scaled - f) @ tc.W_dec
    with steer_features(tiny_model, tc, feats, 2.0):
        _, got = mlp_io(tiny_model, 1)
    torch.testing.assert_close(got, want)
    assert (got - y).abs().max() > 1e-4


def test_replace_mode_is_the_reconstruction(tiny_model) -> None:
    tc = random_transcoder()
    x, _ = mlp_io(tiny_model, 1)
    with steer_features(tiny_model, tc, torch.tensor([0]), 1.0, mode="replace"):
        _, got = mlp_io(tiny_model, 1)
    torch.testing.assert_close(got, tc.decode(tc.encode(x)))


def test_per_row_strength(tiny_model) -> None:
    tc = random_transcoder()
    ref = tiny_model(IDS).logits
    with steer_features(tiny_model, tc, torch.arange(64), torch.tensor([1.0, 0.5])):
        out = tiny_model(IDS).logits
    assert torch.equal(out[0], ref[0]) and not torch.allclose(out[1], ref[1])


def test_feature_scale() -> None:
    assert feature_scale(4, torch.tensor([1, 3]), 2.0).tolist() == [1, 2, 1, 2]
    rows = feature_scale(3, torch.tensor([0]), torch.tensor([0.5, 1.0]))
    assert rows.tolist() == [[0.5, 1, 1], [1, 1, 1]]


def test_per_row_scales_equal_each_row_alone(tiny_model) -> None:
    tc = random_transcoder()
    scale = torch.ones(2, 128)
    scale[0, :40] = 3.0
    scale[1, 60:] = 0.0
    with scale_features(tiny_model, tc, scale):
        both = tiny_model(IDS).logits
    for i in range(2):
        with scale_features(tiny_model, tc, scale[i]):
            alone = tiny_model(IDS[i : i + 1]).logits
        torch.testing.assert_close(both[i : i + 1], alone)
    with (
        pytest.raises(ValueError, match="scale has 7 features"),
        scale_features(tiny_model, tc, torch.ones(7)),
    ):
        pass


def test_load_layers(tmp_path) -> None:
    for layer in (1, 3):
        save_transcoder(random_transcoder(layer=layer), tmp_path / f"tc_{layer:02d}.safetensors")
    loaded = load_layers(tmp_path, "tc_{layer:02d}.safetensors", [3, 1])
    assert {k: v.layer for k, v in loaded.items()} == {3: 3, 1: 1}
    with pytest.raises(StageError, match="no transcoder for layer 2: .*tc_02.safetensors"):
        load_layers(tmp_path, "tc_{layer:02d}.safetensors", [2])
    (tmp_path / "tc_02.safetensors").write_bytes((tmp_path / "tc_01.safetensors").read_bytes())
    with pytest.raises(StageError, match="for layer 1, not 2"):
        load_layers(tmp_path, "tc_{layer:02d}.safetensors", [2])


def test_mlp_hook_points_match_the_bridge(tiny_model, tokenizer) -> None:
    bridge = load_bridge(tiny_model, tokenizer, "HuggingFaceTB/SmolLM2-135M-Instruct")
    x, y = mlp_io(tiny_model, 2)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(IDS)
    torch.testing.assert_close(x, cache["blocks.2.ln2.hook_normalized"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y, cache["blocks.2.hook_mlp_out"], atol=1e-5, rtol=1e-4)


def test_own_format_round_trip(tmp_path) -> None:
    tc = random_transcoder(layer=3)
    save_transcoder(tc, tmp_path / "tc.safetensors")
    back = load_transcoder(tmp_path / "tc.safetensors")
    assert back.layer == 3 and back.meta["hook_point"] == "blocks.3.ln2.hook_normalized"
    for k in ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out", "log_frequency"):
        assert torch.equal(getattr(back, k), getattr(tc, k))


def test_saelens_folder(tmp_path) -> None:
    tc = random_transcoder(layer=2)
    weights = {
        "W_enc": tc.W_enc,
        "b_enc": tc.b_enc,
        "W_dec": tc.W_dec,
        "b_dec": tc.b_dec,
        "b_dec_out": tc.b_dec_out,
    }
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    save_file({"sparsity": tc.log_frequency}, str(tmp_path / "sparsity.safetensors"))
    cfg = {
        "d_in": 64,
        "d_sae": 128,
        "d_out": 64,
        "hook_name": "blocks.2.ln2.hook_normalized",
        "hook_name_out": "blocks.2.hook_mlp_out",
        "architecture": "transcoder",
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    back = load_transcoder(tmp_path)
    assert back.layer == 2 and torch.equal(back.b_dec, tc.b_dec)
    assert torch.equal(back.log_frequency, tc.log_frequency)


def test_saelens_transcoder_with_output_bias_only(tmp_path) -> None:
    tc = random_transcoder(layer=0)
    save_file(
        {"W_enc": tc.W_enc, "b_enc": tc.b_enc, "W_dec": tc.W_dec, "b_dec": tc.b_dec_out},
        str(tmp_path / "sae_weights.safetensors"),
    )
    cfg = {"d_in": 64, "d_sae": 128, "d_out": 64, "hook_name": "blocks.0.mlp.hook_in"}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    back = load_transcoder(tmp_path)
    assert torch.equal(back.b_dec_out, tc.b_dec_out) and torch.equal(back.b_dec, torch.zeros(64))


@dataclass
class LanguageModelSAERunnerConfig:  # stands in for transcoder_circuits' own class
    hook_point: str = "blocks.1.ln2.hook_normalized"
    out_hook_point: str = "blocks.1.hook_mlp_out"
    d_in: int = 64
    d_sae: int = 128
    is_transcoder: bool = True


def _write_circuits_checkpoint(path, tc: Transcoder) -> None:
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
        state = {k: getattr(tc, k) for k in ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out")}
        torch.save({"cfg": cls(), "state_dict": state}, path)
    finally:
        del sys.modules["sae_training.config"], sys.modules["sae_training"]  # not for the loader


def test_transcoder_circuits_checkpoint(tmp_path) -> None:
    tc = random_transcoder(layer=1)
    path = tmp_path / "Llama_blocks.1.ln2.hook_normalized_128.pt"
    _write_circuits_checkpoint(path, tc)
    torch.save(
        tc.log_frequency,
        tmp_path / "Llama_blocks.1.ln2.hook_normalized_128_log_feature_sparsity.pt",
    )
    back = load_transcoder(path)
    assert back.layer == 1 and torch.equal(back.W_dec, tc.W_dec)
    assert torch.equal(back.log_frequency, tc.log_frequency)


class _Evil:
    def __reduce__(self):
        return (print, ("code from the checkpoint ran",))


def test_checkpoint_with_code_is_refused(tmp_path, capsys) -> None:
    torch.save({"cfg": _Evil(), "state_dict": {}}, tmp_path / "evil.pt")
    with pytest.raises(StageError, match="cannot read it safely"):
        load_transcoder(tmp_path / "evil.pt")
    assert "ran" not in capsys.readouterr().out


def test_bad_shapes_and_points(tiny_model) -> None:
    tc = random_transcoder()
    with pytest.raises(StageError, match="b_enc has shape"):
        Transcoder(tc.W_enc, tc.b_enc[:5], tc.W_dec, tc.b_dec, tc.b_dec_out, layer=1)
    with pytest.raises(StageError, match="the model has 4 layers"):
        random_transcoder(layer=9).check_model(tiny_model)
    with pytest.raises(StageError, match="d_model is 64"):
        random_transcoder(d=32).check_model(tiny_model)


def test_saelens_wrong_hook_point(tmp_path) -> None:
    tc = random_transcoder()
    save_file(
        {"W_enc": tc.W_enc, "b_enc": tc.b_enc, "W_dec": tc.W_dec, "b_dec": tc.b_dec},
        str(tmp_path / "sae_weights.safetensors"),
    )
    cfg = {"d_in": 64, "d_sae": 128, "hook_name": "blocks.1.hook_resid_pre"}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(StageError, match="not an MLP input"):
        load_transcoder(tmp_path)


def test_place_moves_each_transcoder_to_its_layer() -> None:
    from tiny import tiny_config
    from transformers import LlamaForCausalLM

    from steerpipe.transcoders import place

    model = LlamaForCausalLM(tiny_config(vocab_size=100)).eval()  # 4 layers, d_model 64
    tcs = {1: random_transcoder(layer=1), 3: random_transcoder(layer=3)}
    same = place(tcs, model)  # already in place: no copy
    assert same[1].W_enc.data_ptr() == tcs[1].W_enc.data_ptr()
    placed = place(tcs, model.to(torch.bfloat16))
    assert all(tc.W_enc.dtype == torch.bfloat16 for tc in placed.values())
    assert torch.equal(placed[3].W_dec, tcs[3].W_dec.to(torch.bfloat16))
    with pytest.raises(StageError, match="the model has 4 layers"):
        place({9: random_transcoder(layer=9)}, model)
