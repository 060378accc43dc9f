"""cross_layer: circuit-tracer's cross-layer transcoders in both layouts, computing what
circuit-tracer computes; steering a source layer's features in every layer they write to
(identity at strength 1 bit for bit, delta and replace checked by hand); the fidelity gate
per target layer.

The fixtures follow decoderesearch/circuit-tracer 0.5.0
circuit_tracer/transcoder/cross_layer_transcoder.py: ``to_safetensors`` (``W_enc_{i}``,
``b_enc_{i}``, ``b_dec_{i}``, ``threshold_{i}`` in ``W_enc_{i}.safetensors``; ``W_dec_{i}
[d_transcoder, n - i, d_model]`` in ``W_dec_{i}.safetensors``), ``load_clt``,
``load_gemma_scope_2_clt`` (``w_enc`` transposed, ``w_dec[i, :, i:]``, ``threshold``,
``affine_skip_connection`` used as ``x @ W_skip``), ``encode`` (``einsum("lbd,lfd->lbf")``,
JumpReLU ``x * (x > threshold)``) and ``compute_reconstruction`` (each source layer's
decoder rows added at the layers from it up, ``+ b_dec``, ``+ x @ W_skip``).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from steerpipe.config import StageError
from steerpipe.lm.hooks import on_mlp
from steerpipe.transcoders.cross_layer import CrossLayerTranscoder, scale_clt_features
from steerpipe.transcoders.fidelity import gated
from steerpipe.transcoders.sets import (
    iter_layers,
    placed_layers,
    read_log_frequency,
    resolve_source,
)
from steerpipe.transcoders.transcoder import scale_features

N, D, M = 4, 64, 32  # the tiny model's layers and width; features per layer
IDS = torch.tensor([[1, 520, 33, 904, 77, 1500, 12, 88], [5, 61, 700, 2, 9, 300, 41, 17]])


def _raw(seed: int = 0, skip: bool = False) -> dict[str, torch.Tensor]:
    """circuit-tracer's CrossLayerTranscoder parameters: W_enc [n, d_transcoder, d_model]."""
    g = torch.Generator().manual_seed(seed)
    raw = {
        "W_enc": torch.randn(N, M, D, generator=g) / 4,
        "b_enc": torch.randn(N, M, generator=g) / 4,
        "b_dec": torch.randn(N, D, generator=g) / 8,
        "threshold": torch.rand(N, M, generator=g) / 4,
    }
    for i in range(N):
        raw[f"W_dec.{i}"] = torch.randn(M, N - i, D, generator=g) / 8
    if skip:
        raw["W_skip"] = torch.randn(N, D, D, generator=g) / 16
    return raw


def _config(folder: Path, **more) -> None:
    config = {
        "model_kind": "cross_layer_transcoder",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "hook_mlp_out",
    }
    (folder / "config.yaml").write_text(yaml.safe_dump({**config, **more}))


def write_circuit_tracer_clt(folder: Path, raw: dict[str, torch.Tensor]) -> None:
    """``CrossLayerTranscoder.to_safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N):
        enc = {f"W_enc_{i}": raw["W_enc"][i], f"b_enc_{i}": raw["b_enc"][i]}
        enc |= {f"b_dec_{i}": raw["b_dec"][i], f"threshold_{i}": raw["threshold"][i]}
        save_file(
            {k: v.contiguous() for k, v in enc.items()}, str(folder / f"W_enc_{i}.safetensors")
        )
        save_file({f"W_dec_{i}": raw[f"W_dec.{i}"]}, str(folder / f"W_dec_{i}.safetensors"))
    _config(folder)


def write_gemma_scope_2_clt(folder: Path, raw: dict[str, torch.Tensor]) -> None:
    """One file per layer, as ``load_gemma_scope_2_clt`` reads them: w_enc [d_model,
    d_transcoder], w_dec [d_transcoder, n, d_model] (the columns below the layer unused)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N):
        w_dec = torch.zeros(M, N, D)
        w_dec[:, i:] = raw[f"W_dec.{i}"]
        w_dec[:, :i] = 7.0  # unused: a loader that read them would be far off
        t = {"w_enc": raw["W_enc"][i].T, "w_dec": w_dec, "b_enc": raw["b_enc"][i]}
        t |= {"b_dec": raw["b_dec"][i], "threshold": raw["threshold"][i]}
        if "W_skip" in raw:
            t["affine_skip_connection"] = raw["W_skip"][i]
        save_file({k: v.contiguous() for k, v in t.items()}, str(folder / f"layer_{i}.safetensors"))
    _config(folder, transcoders=[f"layer_{i}.safetensors" for i in range(N)])


def reference(raw: dict[str, torch.Tensor], x: torch.Tensor, scale: dict[int, torch.Tensor]):
    """circuit-tracer's encode and compute_reconstruction of x [n, pos, d_model], with source
    layer l's features multiplied by ``scale[l]``."""
    pre = torch.einsum("lbd,lfd->lbf", x, raw["W_enc"]) + raw["b_enc"][:, None]
    f = pre * (pre > raw["threshold"][:, None])
    f = torch.stack([f[i] * scale.get(i, torch.ones(M)) for i in range(N)])
    recon = torch.zeros(N, x.shape[1], D)
    for i in range(N):
        for t in range(i, N):
            recon[t] += f[i] @ raw[f"W_dec.{i}"][:, t - i]
    recon = recon + raw["b_dec"][:, None]
    if "W_skip" in raw:
        recon = recon + x @ raw["W_skip"]
    return f, recon


@pytest.mark.parametrize("layout", ["circuit-tracer", "Gemma Scope 2"])
def test_reads_both_layouts_as_circuit_tracer_computes(tmp_path: Path, layout: str) -> None:
    raw = _raw(skip=layout == "Gemma Scope 2")
    if layout == "circuit-tracer":
        write_circuit_tracer_clt(tmp_path, raw)
    else:
        write_gemma_scope_2_clt(tmp_path, raw)
    views = list(iter_layers(tmp_path, "unused", [1, 3]))
    clt = views[0].cross_layer
    assert clt is not None and views[1].cross_layer is clt
    assert (clt.n_layers, clt.d_sae, clt.meta["layout"]) == (N, M, layout)
    assert [(v.layer, v.input_hook, v.output_hook) for v in views] == [
        (1, "mlp.hook_in", "hook_mlp_out"),
        (3, "mlp.hook_in", "hook_mlp_out"),
    ]
    x = torch.randn(N, 6, D, generator=torch.Generator().manual_seed(3))
    f, recon = reference(raw, x, {})
    assert (f > 0).any() and (f == 0).any()
    feats = {i: clt.encode(i, x[i]) for i in range(N)}
    for t in range(N):
        torch.testing.assert_close(feats[t], f[t])
        torch.testing.assert_close(clt.decode(t, feats, x[t]), recon[t])
    torch.testing.assert_close(views[1].encode(x[3]), f[3])  # the view: layer 3's encoder
    assert read_log_frequency(tmp_path, "unused", 1) is None


def test_bad_cross_layer_files_end_in_one_line(tmp_path: Path) -> None:
    raw = _raw()
    write_circuit_tracer_clt(tmp_path / "a", raw)
    (tmp_path / "a/W_dec_2.safetensors").unlink()
    write_gemma_scope_2_clt(tmp_path / "b", raw)
    bad = torch.zeros(M, N - 1, D)
    save_file({"w_dec": bad}, str(tmp_path / "b/layer_2.safetensors"))
    write_circuit_tracer_clt(tmp_path / "c", {**raw, "W_dec.2": torch.zeros(M, N, D)})
    write_circuit_tracer_clt(tmp_path / "e", raw)
    enc = {k: v for k, v in load_file(tmp_path / "e/W_enc_1.safetensors").items()}
    del enc["threshold_1"]
    save_file(enc, str(tmp_path / "e/W_enc_1.safetensors"))
    cases = {
        "e": r"some W_enc_\*.safetensors have a threshold_\* and some not",
        "a": r"W_dec_2.safetensors: no such file",
        "b": r"layer_2.safetensors: no tensor w_enc, b_enc, b_dec, threshold",
        "c": r"W_dec\[2\] has shape \(32, 4, 64\), expected \(32, 2, 64\)",
    }
    for folder, match in cases.items():
        with pytest.raises(StageError, match=match) as excinfo:
            list(iter_layers(tmp_path / folder, "unused", [1]))
        assert "\n" not in str(excinfo.value)
    write_circuit_tracer_clt(tmp_path / "d", raw)
    with pytest.raises(StageError, match="layer 4: the cross-layer transcoder has 4 layers"):
        list(iter_layers(tmp_path / "d", "unused", [4]))


@pytest.fixture
def clt(tmp_path: Path, tiny_model) -> CrossLayerTranscoder:
    raw = _raw(skip=True)
    write_gemma_scope_2_clt(tmp_path / "clt", raw)
    (view,) = placed_layers(str(tmp_path / "clt"), "unused", [1], tiny_model)
    assert view.cross_layer is not None
    return view.cross_layer


def _logits(model, *contexts) -> torch.Tensor:
    with ExitStack() as stack, torch.no_grad():
        for c in contexts:
            stack.enter_context(c)
        return model(IDS).logits


def test_strength_one_is_the_identity_bit_for_bit(tiny_model, clt) -> None:
    plain = _logits(tiny_model)
    ones = {1: torch.ones(M), 2: torch.ones(2, M)}
    assert torch.equal(_logits(tiny_model, scale_clt_features(tiny_model, clt, ones)), plain)
    view = clt.source(1)
    assert torch.equal(_logits(tiny_model, scale_features(tiny_model, view, torch.ones(M))), plain)


def _mlp_io(model, layer: int, clt) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}

    def keep(x, out):
        seen["x"], seen["out"] = x.clone(), out.clone()

    return on_mlp(model, layer, keep, input_hook=clt.input_hook, output_hook=clt.output_hook), seen


def test_delta_changes_every_layer_the_features_write(tiny_model, clt) -> None:
    scale = torch.ones(2, M)
    scale[0, :10] = 3.0  # row 0 scales ten features of layer 1; row 1 is left alone
    # by hand: layer 1's features of the plain run (the layers below are unchanged), their
    # change added to the output of layers 1 to 3
    reader, seen = _mlp_io(tiny_model, 1, clt)
    plain = _logits(tiny_model, reader)
    f = clt.encode(1, seen["x"])
    change = f * scale[:, None, :] - f

    def add(t):
        return lambda x, out: out + change @ clt.W_dec[1][:, t - 1]

    def hook(t):
        return on_mlp(tiny_model, t, add(t), input_hook="mlp.hook_in")

    want = _logits(tiny_model, *(hook(t) for t in (1, 2, 3)))
    got = _logits(tiny_model, scale_clt_features(tiny_model, clt, {1: scale}))
    torch.testing.assert_close(got, want)
    assert torch.equal(got[1], plain[1])  # the row at strength 1
    own_layer_only = _logits(tiny_model, hook(1))
    assert (got[0] - own_layer_only[0]).abs().max() > 1e-3  # the later layers matter


def test_replace_writes_the_reconstruction_from_every_layer_below(tiny_model, clt) -> None:
    scale = torch.ones(M)
    scale[5:9] = 0.0
    readers = [_mlp_io(tiny_model, t, clt) for t in range(N)]
    plain_reader, plain = _mlp_io(tiny_model, 0, clt)
    _logits(tiny_model, plain_reader)
    # the readers enter after the CLT's hooks: they see each layer's input and the output
    # the CLT wrote
    _logits(tiny_model, scale_clt_features(tiny_model, clt, {1: scale}, mode="replace"),
            *(r for r, _ in readers))  # fmt: skip
    seen = [s for _, s in readers]
    raw = {"W_enc": clt.W_enc.transpose(1, 2), "b_enc": clt.b_enc, "b_dec": clt.b_dec}
    raw |= {"threshold": clt.threshold, "W_skip": clt.W_skip}
    raw |= {f"W_dec.{i}": w for i, w in enumerate(clt.W_dec)}
    x = torch.stack([s["x"].reshape(-1, D) for s in seen])
    _, recon = reference(raw, x, {1: scale})
    assert torch.equal(seen[0]["out"], plain["out"])  # below the scaled layer: the MLP's own
    for t in (1, 2, 3):
        torch.testing.assert_close(seen[t]["out"].reshape(-1, D), recon[t])


def test_the_gate_measures_every_layer_the_features_write(tiny_model, clt, tmp_path) -> None:
    sample = [IDS[0].tolist(), IDS[1].tolist()]
    views = list(placed_layers(str(tmp_path / "clt"), "unused", [2], tiny_model))
    kept, measured = gated(tiny_model, views, sample, pad_id=0, min_fve=None)
    assert list(kept) == [2] and sorted(measured) == ["target_2", "target_3"]
    readers = [_mlp_io(tiny_model, t, clt) for t in range(N)]
    _logits(tiny_model, *(r for r, _ in readers))
    xs = [s["x"][:, 1:].reshape(-1, D) for _, s in readers]  # the first tokens left out
    feats = {i: clt.encode(i, xs[i]) for i in range(N)}
    for t in (2, 3):
        y = readers[t][1]["out"][:, 1:].reshape(-1, D)
        r = clt.decode(t, {i: feats[i] for i in range(t + 1)}, xs[t])
        r, y = r.double(), y.double()  # the gate sums exactly (fidelity.variance_explained)
        fve = 1 - ((r - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
        stats = measured[f"target_{t}"]
        assert stats["fraction_variance_explained"] == pytest.approx(float(fve), rel=1e-6)
        assert stats["loss_increase"] != 0
    with pytest.raises(StageError, match=r"cross-layer transcoder .* at layer 2, .* below"):
        gated(tiny_model, views, sample, pad_id=0, min_fve=0.99)


def test_a_hub_cross_layer_transcoder_comes_whole_from_the_local_cache(
    tmp_path: Path, monkeypatch
) -> None:
    """As ``python -m steerpipe.transcoders.sets fetch mntss/clt-llama-3.2-1b-524k`` resolves
    it: every layer's encoder and decoder file, whichever layers are traced."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hub/models--mntss--clt-llama-3.2-1b-524k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text("b" * 40)
    snapshot = repo / "snapshots" / ("b" * 40)
    write_circuit_tracer_clt(snapshot, _raw())
    hub_id = "mntss/clt-llama-3.2-1b-524k"
    folder = resolve_source(hub_id, "unused", [1], cache_dir=tmp_path / "hub")
    assert folder == snapshot
    (view,) = iter_layers(folder, "unused", [1])
    assert view.cross_layer is not None and view.cross_layer.n_layers == N
    (snapshot / "W_dec_3.safetensors").unlink()  # a partial download is not the CLT
    with pytest.raises(StageError, match="not in the local HF cache"):
        resolve_source(hub_id, "unused", [1], cache_dir=tmp_path / "hub")
