"""Cross-layer transcoders (CLTs): a feature reads one layer and writes to it and every later one.

circuit-tracer's ``CrossLayerTranscoder`` (``circuit_tracer/transcoder/cross_layer_transcoder.py``:
``encode_layer``, ``compute_reconstruction``, ``compute_skip``): a feature of source layer l
reads the activation ``x_l`` at ``feature_input_hook`` of layer l,

    f_l = act(x_l @ W_enc[l] + b_enc[l])        (ReLU, or JumpReLU ``x * (x > threshold[l])``)

and layer t's MLP output (at ``feature_output_hook``) is predicted from every layer l <= t:

    y_t = sum_{l <= t} f_l @ W_dec[l][:, t - l] + b_dec[t]   (+ x_t @ W_skip[t])

Two file layouts, read in ``circuit_tracer``: circuit-tracer's own (``to_safetensors``,
``load_clt``) and Gemma Scope 2's (``load_gemma_scope_2_clt``). The whole CLT is read: a
feature's decoders reach every later layer.

The pipeline works on features by source layer: ``source(l)`` is the per-layer view the traces
and neurons stages read (layer l's encoder); ``scale_clt_features`` scales chosen features of
chosen source layers in every layer they write to. ``delta`` adds
``(f_l * s - f_l) @ W_dec[l][:, t - l]`` at each layer t >= l, exactly zero where the scale is
1; ``replace`` writes the CLT's reconstruction ``y_t`` with the scaled features at each layer
from the lowest scaled one up, which needs every layer's features below it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from steerpipe.config import StageError
from steerpipe.lm.hooks import decoder_layers, parse_hook
from steerpipe.transcoders.transcoder import Transcoder, on_transcoder

NO_LAYER = 1 << 30  # a row's start when ``replace`` writes none of its layers


@dataclass
class CrossLayerTranscoder:
    W_enc: torch.Tensor  # [n, d_in, d_sae]
    b_enc: torch.Tensor  # [n, d_sae]
    W_dec: list[torch.Tensor]  # per source layer l: [d_sae, n - l, d_out]
    b_dec: torch.Tensor  # [n, d_out]
    input_hook: str = "hook_resid_mid"
    output_hook: str = "hook_mlp_out"
    threshold: torch.Tensor | None = None  # [n, d_sae]: JumpReLU
    W_skip: torch.Tensor | None = None  # [n, d_in, d_out]
    meta: dict[str, Any] = field(default_factory=dict)
    source_path: str = ""

    def __post_init__(self) -> None:
        where = self.source_path or "cross-layer transcoder"
        n, d_in, d_sae = self.W_enc.shape
        d_out = self.b_dec.shape[-1]
        want: dict[str, tuple[int, ...]] = {"b_enc": (n, d_sae), "b_dec": (n, d_out)}
        if self.threshold is not None:
            want["threshold"] = (n, d_sae)
        if self.W_skip is not None:
            want["W_skip"] = (n, d_in, d_out)
        got = {name: tuple(getattr(self, name).shape) for name in want}
        got |= {f"W_dec[{i}]": tuple(w.shape) for i, w in enumerate(self.W_dec)}
        want |= {f"W_dec[{i}]": (d_sae, n - i, d_out) for i in range(n)}
        if len(self.W_dec) != n:
            raise StageError(f"{where}: {len(self.W_dec)} decoders for {n} encoder layers")
        for name, shape in want.items():
            if got[name] != shape:
                raise StageError(f"{where}: {name} has shape {got[name]}, expected {shape}")
        if self.threshold is not None and bool((self.threshold < 0).any()):
            raise StageError(f"{where}: negative JumpReLU thresholds are not supported")
        self.input_hook = parse_hook(self.input_hook, where=where)[1]
        self.output_hook = parse_hook(self.output_hook, output=True, where=where)[1]

    @property
    def n_layers(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[2])

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Source layer ``layer``'s features of ``x`` (its input hook's activation)."""
        pre = x @ self.W_enc[layer].to(x) + self.b_enc[layer].to(x)
        if self.threshold is None:
            return torch.relu(pre)
        return pre * (pre > self.threshold[layer].to(pre))

    def decode(
        self, layer: int, features: dict[int, torch.Tensor], x: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Layer ``layer``'s predicted output from ``features`` of source layers ``<= layer``
        (those not given count as zero); ``x``, layer ``layer``'s input, for the skip."""
        sources = [s for s in sorted(features) if s <= layer]
        if not sources:
            raise ValueError(f"no features of a source layer <= {layer}")
        first = features[sources[0]]
        y = self.b_dec[layer].to(first).expand(*first.shape[:-1], -1)
        for s in sources:
            y = y + features[s] @ self.W_dec[s][:, layer - s].to(first)
        if self.W_skip is not None:
            if x is None:
                raise ValueError("this transcoder has a skip connection: decode(..., x)")
            y = y + x.to(first) @ self.W_skip[layer].to(first)
        return y

    def source(self, layer: int) -> Transcoder:
        """Layer ``layer``'s features as a per-layer transcoder (``cross_layer`` set): its
        encoder, and as decoder only what they write to their own layer."""
        return Transcoder(
            W_enc=self.W_enc[layer],
            b_enc=self.b_enc[layer],
            W_dec=self.W_dec[layer][:, 0],
            b_dec=torch.zeros(self.W_enc.shape[1], dtype=self.W_enc.dtype),
            b_dec_out=self.b_dec[layer],
            layer=layer,
            input_hook=self.input_hook,
            output_hook=self.output_hook,
            activation="relu" if self.threshold is None else "jumprelu",
            threshold=None if self.threshold is None else self.threshold[layer],
            W_skip=None if self.W_skip is None else self.W_skip[layer],
            meta={**self.meta, "cross_layer": True},
            source=self.source_path,
            cross_layer=self,
        )

    def place(self, model: nn.Module) -> CrossLayerTranscoder:
        """Checked against ``model`` and moved to its device and dtype (the model on one
        device: a CLT's layers talk to each other)."""
        n = len(decoder_layers(model))
        where = self.source_path or "cross-layer transcoder"
        if self.n_layers > n:
            raise StageError(f"{where}: {self.n_layers} layers, the model has {n}")
        d = int(getattr(model, "config").hidden_size)  # noqa: B009 (nn.Module has no config)
        if self.W_enc.shape[1] != d or self.b_dec.shape[1] != d:
            raise StageError(
                f"{where} maps {self.W_enc.shape[1]} -> {self.b_dec.shape[1]}, "
                f"but the model's d_model is {d}"
            )
        weight = next(model.parameters())
        move = {
            k: getattr(self, k).to(weight.device, weight.dtype)
            for k in ("W_enc", "b_enc", "b_dec", "threshold", "W_skip")
            if getattr(self, k) is not None
        }
        dec = [w.to(weight.device, weight.dtype) for w in self.W_dec]
        return dataclasses.replace(self, W_dec=dec, **move)


@contextmanager
def scale_clt_features(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    scales: dict[int, torch.Tensor],
    *,
    mode: str = "delta",
    targets: list[int] | None = None,
    starts: torch.Tensor | None = None,
) -> Iterator[None]:
    """Multiply source layer l's features by ``scales[l]`` ([d_sae], or [batch, d_sae]: one
    per row) in every layer they write to. ``targets``: the layers whose output ``replace``
    writes (default: from the lowest scaled layer up); ``delta`` changes those layers only.
    ``starts`` ([batch]): the layer from which ``replace`` writes each row (``NO_LAYER``:
    none); the rows of a shared batch that steer a higher layer, or nothing, keep the MLP's
    output below it."""
    if mode not in ("delta", "replace"):
        raise ValueError(f"mode must be 'delta' or 'replace', got {mode!r}")
    for layer, scale in scales.items():
        if scale.shape[-1] != clt.d_sae:
            raise ValueError(
                f"scale of layer {layer} has {scale.shape[-1]} features, not {clt.d_sae}"
            )
    if targets is None:
        if not scales:
            raise ValueError("no scales and no targets: nothing to change")
        targets = list(range(min(scales), clt.n_layers))
    written = set(targets)
    # what each source layer contributes in this forward call: the change of its features
    # (delta) or its scaled features (replace); a layer's hook runs before every later one's
    seen: dict[int, torch.Tensor] = {}

    def scaled(layer: int, f: torch.Tensor) -> torch.Tensor:
        s = scales[layer].to(f)
        return f * (s[:, None, :] if s.dim() == 2 else s)

    def make(layer: int) -> Any:
        def site(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
            if mode == "delta":
                if layer in scales:
                    f = clt.encode(layer, x)
                    seen[layer] = scaled(layer, f) - f
                if layer not in written:
                    return None
                change: torch.Tensor | None = None
                for s, d in seen.items():
                    if s <= layer:
                        c = d @ clt.W_dec[s][:, layer - s].to(d)
                        change = c if change is None else change + c
                return None if change is None else out + change.to(out.dtype)
            f = clt.encode(layer, x)
            seen[layer] = scaled(layer, f) if layer in scales else f
            if layer not in written:
                return None
            recon = clt.decode(layer, seen, x).to(out.dtype)
            if starts is None:
                return recon
            return torch.where((starts.to(out.device) <= layer)[:, None, None], recon, out)

        return site

    # delta: the scaled layers and those written; replace: every layer's features up to the top
    hooked = sorted(set(scales) | written) if mode == "delta" else list(range(max(written) + 1))
    with ExitStack() as stack:
        for layer in hooked:
            stack.enter_context(on_transcoder(model, clt.source(layer), make(layer)))
        yield
