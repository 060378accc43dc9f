"""Transcoders: a sparse replacement of a block's MLP, where it reads and writes, and steering.

A transcoder reads an activation ``x`` before a block's MLP and predicts the MLP's output:

    f = act((x - b_dec) @ W_enc + b_enc)        y = f @ W_dec + b_dec_out  (+ x @ W_skip)

``act`` is ReLU, JumpReLU (``relu(pre) * (pre > threshold)``), TopK (the ``k`` largest
pre-activations, as circuit-tracer keeps them) or TopK of the ReLU (sparsify). ``b_dec`` is
zero for formats that do not centre the input.

**Which ``x``** matters (docs/experiment-b.md, "Bringing a real transcoder"); every transcoder
says which of TransformerLens's hook points it reads, and ``lm.hooks.on_mlp`` derives it exactly
from the HF model's own modules:

- ``mlp.hook_in``: the MLP module's input, ``gain * x / rms(x)`` (``(1 + w)`` for Gemma);
- ``ln2.hook_normalized``: ``x / rms(x)``, *before* the gain (TransformerLens applies the gain
  after this hook; with ``fold_ln`` the gain is folded into the MLP's weights);
- ``hook_resid_mid``: the residual stream before the norm.

It writes ``hook_mlp_out`` (what the MLP adds to the residual stream: after Gemma 2/3's
post-MLP norm) or ``mlp.hook_out`` (the MLP module's output; the same on Llama and Qwen2).
The tests compare each of these with TransformerLens's bridge on models with random norm gains.

``steer_features`` adds ``(f' - f) @ W_dec`` to the output, where ``f'`` has the chosen
features scaled: the reconstruction error is kept and strength 1.0 is exactly the unhooked
model, for every activation. ``mode="replace"`` writes the reconstruction of ``f'`` instead.
(The original notebook encoded without ``b_dec``, decoded with ``b_dec`` and wrote the output
into the input hook.) Our file format is here (``save_transcoder``, ``load_ours``); the
others are in ``formats``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from steerpipe.config import StageError
from steerpipe.lm.hooks import SiteFn, decoder_layers, mlp_modules, normalized, on_mlp, parse_hook
from steerpipe.storage import read_tensors, write_tensors

if TYPE_CHECKING:
    from steerpipe.transcoders.cross_layer import CrossLayerTranscoder

ACTIVATIONS = ("relu", "jumprelu", "topk", "topk_relu")
WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out")


@dataclass
class Transcoder:
    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_out]
    b_dec: torch.Tensor  # [d_in], subtracted from the input before encoding
    b_dec_out: torch.Tensor  # [d_out]
    layer: int
    input_hook: str = "mlp.hook_in"
    output_hook: str = "hook_mlp_out"
    activation: str = "relu"
    k: int | None = None  # topk, topk_relu
    threshold: torch.Tensor | None = None  # [d_sae], jumprelu
    W_skip: torch.Tensor | None = None  # [d_in, d_out]
    log_frequency: torch.Tensor | None = None  # [d_sae] log10 firing frequency
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it came from, for error messages
    # a cross-layer transcoder's source layer (``CrossLayerTranscoder.source``): its features
    # also write to every later layer, which steering them goes through
    cross_layer: CrossLayerTranscoder | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        where = f"{self.source or 'transcoder'} (layer {self.layer})"
        if self.W_enc.dim() != 2 or self.W_dec.dim() != 2:
            raise StageError(f"{where}: W_enc and W_dec must be matrices")
        d_in, d_sae = self.W_enc.shape
        d_out = self.W_dec.shape[1]
        want: dict[str, tuple[int, ...]] = {
            "b_enc": (d_sae,),
            "W_dec": (d_sae, d_out),
            "b_dec": (d_in,),
            "b_dec_out": (d_out,),
        }
        if self.threshold is not None:
            want["threshold"] = (d_sae,)
        if self.W_skip is not None:
            want["W_skip"] = (d_in, d_out)
        for name, shape in want.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise StageError(
                    f"{where}: {name} has shape {got}, expected {shape} from W_enc "
                    f"{d_in}x{d_sae} (is a matrix stored the other way round?)"
                )
        self.input_hook = parse_hook(self.input_hook, where=where)[1]
        self.output_hook = parse_hook(self.output_hook, output=True, where=where)[1]
        if self.activation not in ACTIVATIONS:
            raise StageError(f"{where}: activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.activation == "jumprelu" and self.threshold is None:
            raise StageError(f"{where}: a jumprelu transcoder needs a threshold")
        if self.activation.startswith("topk") and not (self.k and 0 < self.k <= d_sae):
            raise StageError(f"{where}: topk needs k in 1..{d_sae}, got {self.k}")

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = (x - self.b_dec.to(x)) @ self.W_enc.to(x) + self.b_enc.to(x)
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            assert self.threshold is not None
            return torch.relu(pre) * (pre > self.threshold.to(pre))
        assert self.k is not None
        kept = pre.topk(self.k, dim=-1).indices
        gate = torch.zeros_like(pre).scatter_(-1, kept, 1.0)
        out = pre * gate
        return torch.relu(out) if self.activation == "topk_relu" else out

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted output; ``x`` (the input) is needed when there is a skip connection."""
        y = f @ self.W_dec.to(f) + self.b_dec_out.to(f)
        if self.W_skip is not None:
            if x is None:
                raise ValueError("this transcoder has a skip connection: decode(f, x)")
            y = y + x.to(f) @ self.W_skip.to(f)
        return y

    def check_model(self, model: nn.Module) -> None:
        """A clear error when the model has no such layer, another width, or no such point."""
        n = len(decoder_layers(model))
        where = f"{self.source or 'transcoder'} (layer {self.layer})"
        if not 0 <= self.layer < n:
            raise StageError(f"{where}: hook point blocks.{self.layer}: the model has {n} layers")
        d = int(getattr(model, "config").hidden_size)  # noqa: B009 (nn.Module has no config)
        if self.W_enc.shape[0] != d or self.W_dec.shape[1] != d:
            raise StageError(
                f"{where} maps {self.W_enc.shape[0]} -> {self.W_dec.shape[1]}, but the model's "
                f"d_model is {d}"
            )
        norm, _, _ = mlp_modules(model, self.layer)
        if self.input_hook == "ln2.hook_normalized":
            normalized(norm, torch.zeros(1, d))  # raises for a norm it cannot invert

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Transcoder:
        """A copy with the weights on ``device`` in ``dtype`` (log frequencies stay)."""
        moved = {
            k: getattr(self, k).to(device, dtype)
            for k in (*WEIGHTS, "threshold", "W_skip")
            if getattr(self, k) is not None
        }
        return dataclasses.replace(self, **moved)


@contextmanager
def on_transcoder(model: nn.Module, transcoder: Transcoder, fn: SiteFn) -> Iterator[None]:
    """``on_mlp`` at the transcoder's layer and hook points, after checking it fits."""
    transcoder.check_model(model)
    with on_mlp(
        model,
        transcoder.layer,
        fn,
        input_hook=transcoder.input_hook,
        output_hook=transcoder.output_hook,
    ):
        yield


def feature_scale(
    d_sae: int, features: torch.Tensor, strength: float | torch.Tensor
) -> torch.Tensor:
    """Multipliers for every feature: ``strength`` on ``features`` (indices), 1.0 elsewhere.

    ``strength`` may be a ``[batch]`` tensor, giving a ``[batch, d_sae]`` scale (one per row).
    """
    s = torch.as_tensor(strength, dtype=torch.float32)
    if s.dim() == 0:
        scale = torch.ones(d_sae)
        scale[features.long()] = s
        return scale
    scale = torch.ones(len(s), d_sae)
    scale[:, features.long()] = s[:, None]
    return scale


@contextmanager
def scale_features(
    model: nn.Module,
    transcoder: Transcoder,
    scale: torch.Tensor,
    *,
    mode: str = "delta",
    rows: torch.Tensor | None = None,
) -> Iterator[None]:
    """Multiply the transcoder's features by ``scale`` ([d_sae], or [batch, d_sae] for one
    scale per row). ``delta`` adds ``(f * scale - f) @ W_dec`` to the output, which is exactly
    zero where the scale is 1; ``replace`` returns the reconstruction of the scaled features,
    in the rows that ``rows`` ([batch] bools) marks (None: every row): the others of a shared
    batch keep the MLP's own output."""
    if mode not in ("delta", "replace"):
        raise ValueError(f"mode must be 'delta' or 'replace', got {mode!r}")
    if transcoder.cross_layer is not None:  # to every layer its features write
        from steerpipe.transcoders.cross_layer import NO_LAYER, scale_clt_features

        starts = None if rows is None else torch.where(rows, transcoder.layer, NO_LAYER)
        with scale_clt_features(
            model, transcoder.cross_layer, {transcoder.layer: scale}, mode=mode, starts=starts
        ):
            yield
        return
    if scale.shape[-1] != transcoder.d_sae:
        raise ValueError(f"scale has {scale.shape[-1]} features, the transcoder {transcoder.d_sae}")

    def change(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        f = transcoder.encode(x)
        s = scale.to(f)
        scaled = f * (s[:, None, :] if s.dim() == 2 else s)
        if mode == "replace":
            recon = transcoder.decode(scaled, x).to(out.dtype)
            return (
                recon
                if rows is None
                else torch.where(rows.to(out.device)[:, None, None], recon, out)
            )
        return out + ((scaled - f) @ transcoder.W_dec.to(f)).to(out.dtype)

    with on_transcoder(model, transcoder, change):
        yield


@contextmanager
def steer_features(
    model: nn.Module,
    transcoder: Transcoder,
    features: torch.Tensor,
    strength: float | torch.Tensor,
    *,
    mode: str = "delta",
) -> Iterator[None]:
    """Scale ``features`` (indices) by ``strength`` (a float, or ``[batch]``: one per row)."""
    scale = feature_scale(transcoder.d_sae, features, strength)
    with scale_features(model, transcoder, scale, mode=mode):
        yield


def place(transcoder: Transcoder, model: nn.Module) -> Transcoder:
    """The transcoder checked against ``model`` and moved, once, to its layer's device and
    dtype: the hooks would otherwise copy the weights (GBs for 65k features) on every call."""
    transcoder.check_model(model)
    weight = next(decoder_layers(model)[transcoder.layer].parameters())
    return transcoder.to(weight.device, weight.dtype)


def save_transcoder(transcoder: Transcoder, path: str | Path) -> None:
    """Our format: the weights (and log frequencies) in safetensors, the rest in metadata."""
    tensors = {k: getattr(transcoder, k) for k in WEIGHTS}
    for name in ("threshold", "W_skip", "log_frequency"):
        if getattr(transcoder, name) is not None:
            tensors[name] = getattr(transcoder, name)
    meta = {
        **transcoder.meta,
        "layer": transcoder.layer,
        "input_hook": transcoder.input_hook,
        "output_hook": transcoder.output_hook,
        "activation": transcoder.activation,
        "k": transcoder.k,
    }
    write_tensors(tensors, path, meta)


def need_tensors(tensors: dict[str, torch.Tensor], names: tuple[str, ...], path: Path) -> None:
    """A one-line error naming the file and the tensors it lacks."""
    missing = [n for n in names if n not in tensors]
    if missing:
        raise StageError(f"{path}: no tensor {', '.join(missing)}")


def load_ours(path: str | Path) -> Transcoder:
    """Our format (``save_transcoder``); other formats: ``formats``."""
    tensors, meta = read_tensors(path)
    need_tensors(tensors, WEIGHTS, Path(path))
    if "layer" not in meta:
        raise StageError(f"{path}: not a steerpipe transcoder (no 'layer' in its metadata)")
    if "input_hook" not in meta:
        raise StageError(
            f"{path}: no 'input_hook' in its metadata (written before conventions were "
            "recorded; steerpipe's own read mlp.hook_in: set traces.input_hook=mlp.hook_in)"
        )
    w_enc, b_enc, w_dec, b_dec, b_dec_out = (tensors[k] for k in WEIGHTS)
    return Transcoder(
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        b_dec_out,
        layer=int(meta["layer"]),
        input_hook=meta["input_hook"],
        output_hook=meta.get("output_hook", "hook_mlp_out"),
        activation=meta.get("activation", "relu"),
        k=meta.get("k"),
        threshold=tensors.get("threshold"),
        W_skip=tensors.get("W_skip"),
        log_frequency=tensors.get("log_frequency"),
        meta={**meta, "format": "steerpipe", "input_hook_from": "metadata input_hook"},
        source=str(path),
    )
