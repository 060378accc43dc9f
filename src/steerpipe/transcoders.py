"""Transcoders: a sparse replacement of a block's MLP, its file formats, and steering hooks.

A transcoder reads the MLP input (``blocks.{L}.ln2.hook_normalized``: the normalised residual
stream) and predicts the MLP output (``blocks.{L}.hook_mlp_out``):

    f = relu((x - b_dec) @ W_enc + b_enc)        y = f @ W_dec + b_dec_out

On the HF model the MLP input and output are the input and output of ``layers[L].mlp``, so
one forward hook there sees both. ``steer_features`` adds ``(f' - f) @ W_dec`` to the MLP's
own output, where ``f'`` has the masked features scaled by ``strength``: the transcoder's
reconstruction error is kept and strength 1.0 is exactly the unhooked model. ``mode="replace"``
instead swaps the MLP output for the reconstruction ``f' @ W_dec + b_dec_out``, as the
transcoder papers evaluate it. (The original notebook encoded without ``b_dec``, decoded with
``b_dec`` and wrote the output into the input hook; all three are fixed here.)

Formats read: our own (safetensors, config in the metadata), SAELens folders
(``sae_weights.safetensors`` + ``cfg.json``), and transcoder_circuits ``.pt`` checkpoints, read
without arbitrary unpickling, with their ``*_log_feature_sparsity.pt``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steerpipe.config import StageError
from steerpipe.hooks import decoder_layers
from steerpipe.storage import read_tensors, write_tensors

WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out")


@dataclass
class Transcoder:
    W_enc: torch.Tensor  # [d_in, d_sae]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_out]
    b_dec: torch.Tensor  # [d_in], subtracted from the input before encoding
    b_dec_out: torch.Tensor  # [d_out]
    layer: int
    log_frequency: torch.Tensor | None = None  # [d_sae] log10 firing frequency
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d_in, d_sae = self.W_enc.shape
        d_out = self.W_dec.shape[1]
        want = {"b_enc": (d_sae,), "W_dec": (d_sae, d_out), "b_dec": (d_in,), "b_dec_out": (d_out,)}
        for name, shape in want.items():
            if tuple(getattr(self, name).shape) != shape:
                got = tuple(getattr(self, name).shape)
                raise StageError(
                    f"transcoder at layer {self.layer}: {name} has shape {got}, "
                    f"expected {shape} from W_enc {d_in}x{d_sae}"
                )

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec.to(x)) @ self.W_enc.to(x) + self.b_enc.to(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec.to(f) + self.b_dec_out.to(f)

    def check_model(self, model: nn.Module) -> None:
        """A clear error when the model has no such layer or another width."""
        n = len(decoder_layers(model))
        if not 0 <= self.layer < n:
            raise StageError(f"transcoder hook point blocks.{self.layer}: the model has {n} layers")
        d = int(getattr(model, "config").hidden_size)  # noqa: B009 (nn.Module has no config)
        if self.W_enc.shape[0] != d or self.W_dec.shape[1] != d:
            raise StageError(
                f"transcoder at layer {self.layer} maps {self.W_enc.shape[0]} -> "
                f"{self.W_dec.shape[1]}, but the model's d_model is {d}"
            )

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Transcoder:
        moved = {k: getattr(self, k).to(device, dtype) for k in WEIGHTS}
        return Transcoder(
            **moved, layer=self.layer, log_frequency=self.log_frequency, meta=self.meta
        )


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
    model: nn.Module, transcoder: Transcoder, scale: torch.Tensor, *, mode: str = "delta"
) -> Iterator[None]:
    """Multiply the transcoder's features at its layer's MLP by ``scale`` ([d_sae], or
    [batch, d_sae] for one scale per row). ``delta`` adds ``(f * scale - f) @ W_dec`` to the
    MLP output, which is exactly zero where the scale is 1; ``replace`` returns the
    reconstruction of the scaled features instead of the MLP output."""
    if mode not in ("delta", "replace"):
        raise ValueError(f"mode must be 'delta' or 'replace', got {mode!r}")
    transcoder.check_model(model)
    if scale.shape[-1] != transcoder.d_sae:
        raise ValueError(f"scale has {scale.shape[-1]} features, the transcoder {transcoder.d_sae}")
    mlp = decoder_layers(model)[transcoder.layer].get_submodule("mlp")

    def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        f = transcoder.encode(args[0])
        s = scale.to(f)
        scaled = f * (s[:, None, :] if s.dim() == 2 else s)
        if mode == "replace":
            return transcoder.decode(scaled)
        return output + (scaled - f) @ transcoder.W_dec.to(f)

    handle = mlp.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


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


def save_transcoder(transcoder: Transcoder, path: str | Path) -> None:
    """Our format: the five weights (and log frequencies) in safetensors, config in metadata."""
    tensors = {k: getattr(transcoder, k) for k in WEIGHTS}
    if transcoder.log_frequency is not None:
        tensors["log_frequency"] = transcoder.log_frequency
    meta = {
        **transcoder.meta,
        "layer": transcoder.layer,
        "hook_point": f"blocks.{transcoder.layer}.ln2.hook_normalized",
        "out_hook_point": f"blocks.{transcoder.layer}.hook_mlp_out",
    }
    write_tensors(tensors, path, meta)


def load_transcoder(path: str | Path) -> Transcoder:
    """Any supported format: our .safetensors, a SAELens folder, a transcoder_circuits .pt."""
    path = Path(path)
    if path.is_dir():
        return load_saelens(path)
    if path.suffix == ".pt":
        return load_transcoder_circuits(path)
    tensors, meta = read_tensors(path)
    missing = [k for k in WEIGHTS if k not in tensors]
    if missing or "layer" not in meta:
        raise StageError(f"{path}: not a steerpipe transcoder (missing {missing or 'layer'})")
    return Transcoder(
        **{k: tensors[k] for k in WEIGHTS},
        layer=int(meta["layer"]),
        log_frequency=tensors.get("log_frequency"),
        meta=meta,
    )


def load_layers(folder: str | Path, file: str, layers: list[int]) -> dict[int, Transcoder]:
    """One transcoder per layer: ``folder / file.format(layer=L)`` in any supported format."""
    out = {}
    for layer in layers:
        path = Path(folder) / file.format(layer=layer)
        if not path.exists():
            raise StageError(f"no transcoder for layer {layer}: {path} does not exist")
        tc = load_transcoder(path)
        if tc.layer != layer:
            raise StageError(f"{path} is a transcoder for layer {tc.layer}, not {layer}")
        out[layer] = tc
    return out


def place(transcoders: dict[int, Transcoder], model: nn.Module) -> dict[int, Transcoder]:
    """Each transcoder checked against ``model`` and moved, once, to its layer's device and
    dtype: the hooks would otherwise copy the weights (GBs for 65k features) on every call."""
    blocks = decoder_layers(model)
    placed = {}
    for layer, tc in transcoders.items():
        tc.check_model(model)
        weight = next(blocks[layer].parameters())
        placed[layer] = tc.to(weight.device, weight.dtype)
    return placed


def _layer_of(hook_name: str, source: Path) -> int:
    match = re.match(r"^blocks\.(\d+)\.(ln2\.hook_normalized|mlp\.hook_in)$", hook_name)
    if not match:
        raise StageError(
            f"{source}: hook point {hook_name!r} is not an MLP input "
            "(blocks.L.ln2.hook_normalized or blocks.L.mlp.hook_in)"
        )
    return int(match.group(1))


def load_saelens(folder: Path) -> Transcoder:
    """A SAELens folder: ``sae_weights.safetensors`` and ``cfg.json`` (``sparsity.safetensors``)."""
    cfg_path, weights_path = folder / "cfg.json", folder / "sae_weights.safetensors"
    if not cfg_path.exists() or not weights_path.exists():
        raise StageError(f"{folder}: a SAELens folder needs cfg.json and sae_weights.safetensors")
    cfg = json.loads(cfg_path.read_text())
    tensors, _ = read_tensors(weights_path)
    layer = _layer_of(cfg.get("hook_name", ""), folder)
    d_in, d_out = int(cfg["d_in"]), int(cfg.get("d_out", cfg["d_in"]))
    if "b_dec_out" in tensors:
        b_dec, b_dec_out = tensors["b_dec"], tensors["b_dec_out"]
    else:  # SAELens transcoders: b_dec is the output bias and the input is not centred
        b_dec, b_dec_out = torch.zeros(d_in), tensors["b_dec"]
    freq = None
    if (folder / "sparsity.safetensors").exists():
        freq = read_tensors(folder / "sparsity.safetensors")[0].get("sparsity")
    if tuple(tensors["W_dec"].shape) != (int(cfg["d_sae"]), d_out):
        raise StageError(
            f"{folder}: W_dec is {tuple(tensors['W_dec'].shape)}, cfg.json says "
            f"d_sae={cfg['d_sae']}, d_out={d_out}"
        )
    return Transcoder(
        tensors["W_enc"],
        tensors["b_enc"],
        tensors["W_dec"],
        b_dec,
        b_dec_out,
        layer=layer,
        log_frequency=freq,
        meta={"source": "saelens"},
    )


def load_transcoder_circuits(path: Path) -> Transcoder:
    """A transcoder_circuits checkpoint: ``{"cfg": <config object>, "state_dict": {...}}``.

    Read with torch's weights-only unpickler: the config class is replaced by a plain record
    type registered under its own name, so no code from the checkpoint ever runs.
    """
    record = type("LanguageModelSAERunnerConfig", (), {"__module__": "sae_training.config"})
    try:
        with torch.serialization.safe_globals([record]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch names the class it refused
        raise StageError(
            f"{path}: cannot read it safely as a transcoder_circuits file ({e})"
        ) from e
    cfg = ckpt["cfg"].__dict__ if not isinstance(ckpt["cfg"], dict) else ckpt["cfg"]
    state = ckpt["state_dict"]
    missing = [k for k in WEIGHTS if k not in state]
    if missing:
        raise StageError(f"{path}: state_dict lacks {missing}")
    layer = _layer_of(str(cfg.get("hook_point", "")), path)
    sparsity = path.with_name(path.stem + "_log_feature_sparsity.pt")
    freq = (
        torch.load(sparsity, map_location="cpu", weights_only=True) if sparsity.exists() else None
    )
    return Transcoder(
        W_enc=state["W_enc"],
        b_enc=state["b_enc"],
        W_dec=state["W_dec"],
        b_dec=state["b_dec"],
        b_dec_out=state["b_dec_out"],
        layer=layer,
        log_frequency=freq,
        meta={"source": "transcoder_circuits"},
    )
