"""transcoder: each activation encodes as its library does, steering is exact at strength 1
for every activation, skip connection and input hook, and bad transcoders are refused with a
clear message. (That the hook points are TransformerLens's is in test_hooks.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from test_hooks import mlp_io

from steerpipe.config import StageError
from steerpipe.lm.hooks import mlp_modules
from steerpipe.transcoders.transcoder import (
    Transcoder,
    feature_scale,
    place,
    scale_features,
    steer_features,
)

IDS = torch.tensor([[1, 520, 33, 904, 77, 1500, 12], [1, 9, 8, 7, 6, 5, 4]])


def random_transcoder(
    layer: int = 1,
    d: int = 64,
    d_sae: int = 128,
    seed: int = 0,
    *,
    activation: str = "relu",
    skip: bool = False,
    input_hook: str = "mlp.hook_in",
    output_hook: str = "hook_mlp_out",
) -> Transcoder:
    g = torch.Generator().manual_seed(seed)
    return Transcoder(
        W_enc=torch.randn(d, d_sae, generator=g) / 8,
        b_enc=torch.randn(d_sae, generator=g) / 8,
        W_dec=torch.randn(d_sae, d, generator=g) / 8,
        b_dec=torch.randn(d, generator=g) / 8,
        b_dec_out=torch.randn(d, generator=g) / 8,
        layer=layer,
        input_hook=input_hook,
        output_hook=output_hook,
        activation=activation,
        k=16 if activation.startswith("topk") else None,
        threshold=torch.rand(d_sae, generator=g) / 4 if activation == "jumprelu" else None,
        W_skip=torch.randn(d, d, generator=g) / 16 if skip else None,
        log_frequency=torch.linspace(-8, -1, d_sae),
    )


KINDS = [
    ("relu", False, "mlp.hook_in"),
    ("jumprelu", False, "ln2.hook_normalized"),
    ("topk", True, "hook_resid_mid"),
    ("topk_relu", True, "mlp.hook_in"),
    ("relu", True, "ln2.hook_normalized"),
]


@pytest.mark.device
@pytest.mark.parametrize(("activation", "skip", "input_hook"), KINDS)
def test_strength_one_is_exactly_the_model(model_on_device, activation, skip, input_hook) -> None:
    model, ids = model_on_device, IDS.to(model_on_device.device)
    tc = random_transcoder(activation=activation, skip=skip, input_hook=input_hook)
    tc = tc.to(model.device)
    ref = model(ids).logits
    with steer_features(model, tc, torch.arange(0, 128, 2), 1.0):
        assert torch.equal(model(ids).logits, ref)
    with steer_features(model, tc, torch.arange(0, 128, 2), 2.0):
        assert not torch.allclose(model(ids).logits, ref)


@pytest.mark.parametrize(("activation", "skip", "input_hook"), KINDS)
def test_delta_mode_adds_the_feature_change(tiny_model, activation, skip, input_hook) -> None:
    tc = random_transcoder(activation=activation, skip=skip, input_hook=input_hook)
    feats = torch.tensor([3, 17, 40, 99])
    x, y = mlp_io(tiny_model, 1, IDS, input_hook=input_hook)
    f = tc.encode(x)
    scaled = f.clone()
    scaled[..., feats] *= 2.0
    want = y + (scaled - f) @ tc.W_dec
    with steer_features(tiny_model, tc, feats, 2.0):
        _, got = mlp_io(tiny_model, 1, IDS)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("activation", "skip", "input_hook"), KINDS)
def test_replace_mode_is_the_reconstruction(tiny_model, activation, skip, input_hook) -> None:
    tc = random_transcoder(activation=activation, skip=skip, input_hook=input_hook)
    x, _ = mlp_io(tiny_model, 1, IDS, input_hook=input_hook)
    with steer_features(tiny_model, tc, torch.tensor([0]), 1.0, mode="replace"):
        _, got = mlp_io(tiny_model, 1, IDS)
    want = tc.encode(x) @ tc.W_dec + tc.b_dec_out
    if skip:
        want = want + x @ tc.W_skip
    torch.testing.assert_close(got, want)


def test_activations() -> None:
    """Each activation on a hand-made pre-activation (W_enc the identity, no biases)."""
    pre = torch.tensor([[3.0, -5.0, 1.0, 0.5, -0.2]])

    def tc(activation: str, **kw) -> Transcoder:
        eye = torch.eye(5)
        zeros = torch.zeros(5)
        return Transcoder(eye, zeros, eye, zeros, zeros, layer=0, activation=activation, **kw)

    def check(got: torch.Tensor, want: list[float]) -> None:
        assert torch.equal(got, torch.tensor([want]))

    check(tc("relu").encode(pre), [3.0, 0.0, 1.0, 0.5, 0.0])
    jump = tc("jumprelu", threshold=torch.tensor([2.0, 0.0, 2.0, 0.1, 0.0]))
    check(jump.encode(pre), [3.0, 0.0, 0.0, 0.5, 0.0])
    # circuit-tracer's TopK keeps the k largest pre-activations, negative ones too
    check(tc("topk", k=4).encode(pre), [3.0, 0.0, 1.0, 0.5, -0.2])
    # sparsify's: the k largest of the ReLU
    check(tc("topk_relu", k=4).encode(pre), [3.0, 0.0, 1.0, 0.5, 0.0])
    check(tc("topk", k=2).encode(pre), [3.0, 0.0, 1.0, 0.0, 0.0])


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
    tc = random_transcoder(activation="topk", skip=True, input_hook="ln2.hook_normalized")
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


def test_hooks_are_removed_after_an_error(tiny_model) -> None:
    tc = random_transcoder()
    ref = tiny_model(IDS).logits
    with pytest.raises(RuntimeError), steer_features(tiny_model, tc, torch.arange(4), 3.0):
        raise RuntimeError("out of memory")
    assert torch.equal(tiny_model(IDS).logits, ref)
    norm, mlp, _ = mlp_modules(tiny_model, 1)
    assert not norm._forward_hooks and not mlp._forward_hooks


def test_bad_transcoders(tiny_model) -> None:
    tc = random_transcoder()
    with pytest.raises(StageError, match=r"b_enc has shape \(5,\)"):
        Transcoder(tc.W_enc, tc.b_enc[:5], tc.W_dec, tc.b_dec, tc.b_dec_out, layer=1)
    with pytest.raises(StageError, match=r"tc.pt \(layer 1\): W_dec has shape \(64, 128\)"):
        Transcoder(tc.W_enc, tc.b_enc, tc.W_dec.T, tc.b_dec, tc.b_dec_out, layer=1, source="tc.pt")
    with pytest.raises(StageError, match="activation 'gelu' is not one of"):
        random_transcoder(activation="gelu")
    with pytest.raises(StageError, match="topk needs k"):
        Transcoder(tc.W_enc, tc.b_enc, tc.W_dec, tc.b_dec, tc.b_dec_out, layer=1, activation="topk")
    with pytest.raises(StageError, match="jumprelu transcoder needs a threshold"):
        Transcoder(
            tc.W_enc, tc.b_enc, tc.W_dec, tc.b_dec, tc.b_dec_out, layer=1, activation="jumprelu"
        )
    with pytest.raises(StageError, match="'blocks.1.hook_attn_out' is not an MLP input"):
        random_transcoder(input_hook="blocks.1.hook_attn_out")
    with pytest.raises(StageError, match="the model has 4 layers"):
        random_transcoder(layer=9).check_model(tiny_model)
    with pytest.raises(StageError, match="d_model is 64"):
        random_transcoder(d=32).check_model(tiny_model)
    with pytest.raises(ValueError, match="skip connection"):
        random_transcoder(skip=True).decode(torch.zeros(1, 128))


def test_place_moves_the_transcoder_to_its_layer(tiny_model) -> None:
    tc = random_transcoder(layer=3, activation="jumprelu", skip=True)
    same = place(tc, tiny_model)  # already in place: no copy
    assert same.W_enc.data_ptr() == tc.W_enc.data_ptr()
    model = copy.deepcopy(tiny_model).to(torch.bfloat16)
    placed = place(tc, model)
    assert placed.W_enc.dtype == placed.W_skip.dtype == placed.threshold.dtype == torch.bfloat16
    assert torch.equal(placed.W_dec, tc.W_dec.to(torch.bfloat16))
    assert placed.input_hook == tc.input_hook and placed.activation == "jumprelu"
    with pytest.raises(StageError, match="the model has 4 layers"):
        place(random_transcoder(layer=9), model)
