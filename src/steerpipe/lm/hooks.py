"""Hooks on the plain HF model at the points that TransformerLens hook names denote.

``blocks.{L}.hook_resid_pre`` is the residual stream entering decoder layer L, i.e. the
``hidden_states`` argument of ``model.model.layers[L]``; a forward pre-hook there reads or edits
exactly what the bridge's hook of that name sees (tests check this against the bridge).

Around a block's MLP (``on_mlp``, for transcoders): ``hook_resid_mid`` is the input of the norm
before the MLP, ``ln2.hook_normalized`` that input divided by its RMS *before* the norm's gain
(TransformerLens multiplies by the gain after this hook), ``mlp.hook_in`` the norm's output (the
MLP's input), ``mlp.hook_out`` the MLP's output and ``hook_mlp_out`` what the block adds to the
residual stream (after Gemma 2/3's post-MLP norm; the MLP's output elsewhere). The tests
compare each with the bridge on Llama, Qwen2, Gemma and Gemma 2 models with random gains.

Every hook is a context manager that removes itself in ``finally``, so an exception inside
the block (including an out-of-memory error) never leaves a stale hook on the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerpipe.config import StageError

_RESID_PRE = re.compile(r"^blocks\.(\d+)\.hook_resid_pre$")
INPUT_HOOKS = ("mlp.hook_in", "ln2.hook_normalized", "hook_resid_mid")
OUTPUT_HOOKS = ("hook_mlp_out", "mlp.hook_out")
# Other names of the same points (TransformerLens's bridge has both).
_ALIASES = {"ln2.hook_out": "mlp.hook_in", "ln2.hook_in": "hook_resid_mid"}
_HOOK = re.compile(r"^(?:blocks\.(\d+)\.)?(.+)$")


@dataclass(frozen=True)
class Steer:
    """Add ``vector`` to the residual stream entering ``layer`` (``hook_resid_pre``)."""

    layer: int
    vector: torch.Tensor


def batch_deltas(steers: Sequence[Steer | None], d_model: int) -> dict[int, torch.Tensor]:
    """Per-row steering as ``add_to_resid_pre`` takes it: for each layer a ``[rows, d_model]``
    delta holding each row's vector, zero on the rows that do not steer that layer."""
    deltas: dict[int, torch.Tensor] = {}
    for i, s in enumerate(steers):
        if s is None:
            continue
        if s.layer not in deltas:
            deltas[s.layer] = torch.zeros(len(steers), d_model, dtype=s.vector.dtype)
        deltas[s.layer][i] = s.vector
    return deltas


def parse_resid_pre(name: str) -> int:
    """The layer of a ``blocks.{L}.hook_resid_pre`` hook name."""
    match = _RESID_PRE.match(name)
    if not match:
        raise ValueError(f"not a resid_pre hook name: {name!r}")
    return int(match.group(1))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of an HF causal LM (Llama, Qwen2, Mistral, ... layouts)."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else model
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"cannot find decoder layers on {type(model).__name__}")
    return layers


HiddenFn = Callable[[torch.Tensor], torch.Tensor | None]


@contextmanager
def on_resid_pre(model: nn.Module, fns: dict[int, HiddenFn]) -> Iterator[None]:
    """Call ``fns[L](hidden)`` on the input of decoder layer L; a returned tensor replaces it."""
    layers = decoder_layers(model)
    handles = []

    def make(fn: HiddenFn) -> Callable[..., Any]:
        def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return pre_hook

    try:
        for layer, fn in fns.items():
            if not 0 <= layer < len(layers):
                raise ValueError(f"layer {layer} is outside the model's {len(layers)} layers")
            handles.append(layers[layer].register_forward_pre_hook(make(fn), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def add_to_resid_pre(model: nn.Module, deltas: dict[int, torch.Tensor]) -> Iterator[None]:
    """Add ``deltas[L]`` to the residual stream entering layer L at every position.

    A delta is ``[d_model]`` (every row) or ``[batch, d_model]`` (one vector per row: rows of
    different sweep cells, or steered and control rows, share a batch). It acts on every forward
    call, so under ``generate`` with a KV cache it reaches the prompt at prefill and each newly
    decoded token after it.
    """

    def make(delta: torch.Tensor) -> HiddenFn:
        def add(hidden: torch.Tensor) -> torch.Tensor:
            d = delta.to(hidden.device, hidden.dtype)
            if d.dim() == 2:
                if d.shape[0] != hidden.shape[0]:
                    raise ValueError(
                        f"per-row delta has {d.shape[0]} rows, the batch has {hidden.shape[0]}"
                    )
                d = d[:, None, :]
            return hidden + d

        return add

    with on_resid_pre(model, {layer: make(d) for layer, d in deltas.items()}):
        yield


def parse_hook(name: str, *, output: bool = False, where: str = "") -> tuple[int | None, str]:
    """``blocks.L.<point>`` or ``<point>`` -> (L or None, the canonical point name).
    ``where`` (a file and field) starts the error message."""
    match = _HOOK.match(str(name))
    point = _ALIASES.get(match.group(2), match.group(2)) if match else ""
    allowed = OUTPUT_HOOKS if output else INPUT_HOOKS
    if point not in allowed:
        side = "an MLP output" if output else "an MLP input"
        prefix = f"{where}: " if where else ""
        raise StageError(f"{prefix}hook point {name!r} is not {side} (one of {', '.join(allowed)})")
    return (int(match.group(1)) if match and match.group(1) else None), point


def hook_layer(name: str) -> int | None:
    """L of ``blocks.L.<anything>``, None without the block (``mlp.hook_in``)."""
    match = _HOOK.match(str(name))
    return int(match.group(1)) if match and match.group(1) else None


# HF module points, as SAELens's ``hf_hook_name`` and Gemma Scope 2's ``hf_hook_point_in`` /
# ``_out`` name them (``sae_lens/loading/pretrained_sae_loaders.py``,
# ``_infer_gemma_3_raw_cfg_dict``), -> ours. ``post_attention_layernorm.output`` is not here:
# it is the MLP's input on Llama and Qwen2 but the attention's normed output on Gemma 2/3.
HF_INPUT_POINTS = {
    "pre_feedforward_layernorm.output": "mlp.hook_in",
    "mlp.input": "mlp.hook_in",
    "pre_feedforward_layernorm.input": "hook_resid_mid",
}
HF_OUTPUT_POINTS = {
    "post_feedforward_layernorm.output": "hook_mlp_out",
    "mlp.output": "mlp.hook_out",
}
_HF_POINT = re.compile(r"^(?:[\w.]*\.)?layers\.(\d+)\.(.+)$")


def parse_hf_hook(name: str, *, output: bool = False, where: str = "") -> tuple[int, str]:
    """``model.layers.L.<module>.<input|output>`` (an HF module's input or output) -> (L, our
    point). ``model.language_model.layers.L...`` (Gemma 3 with vision) is read the same way."""
    match = _HF_POINT.match(str(name))
    points = HF_OUTPUT_POINTS if output else HF_INPUT_POINTS
    if not match or match.group(2) not in points:
        side = "an MLP output" if output else "an MLP input"
        known = ", ".join(f"layers.L.{k}" for k in points)
        prefix = f"{where}: " if where else ""
        raise StageError(f"{prefix}HF hook point {name!r} is not {side} this knows ({known})")
    return int(match.group(1)), points[match.group(2)]


def mlp_modules(model: nn.Module, layer: int) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """(the norm before the MLP, the MLP, the norm after it or None) of decoder block ``layer``.

    Llama, Qwen2, Mistral, Gemma: ``post_attention_layernorm`` then ``mlp``; Gemma 2/3:
    ``pre_feedforward_layernorm``, ``mlp``, ``post_feedforward_layernorm``.
    """
    block = decoder_layers(model)[layer]
    norm = getattr(block, "pre_feedforward_layernorm", None) or getattr(
        block, "post_attention_layernorm", None
    )
    mlp = getattr(block, "mlp", None)
    if not isinstance(norm, nn.Module) or not isinstance(mlp, nn.Module):
        raise StageError(f"cannot find the norm before the MLP in {type(block).__name__}")
    post = getattr(block, "post_feedforward_layernorm", None)
    return norm, mlp, post if isinstance(post, nn.Module) else None


def normalized(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x / rms(x)`` (or LayerNorm's ``(x - mean) / std``) as ``norm`` computes it before
    its gain: TransformerLens's ``ln2.hook_normalized``."""
    if isinstance(norm, nn.LayerNorm):
        return nn.functional.layer_norm(x, norm.normalized_shape, eps=norm.eps)
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if not type(norm).__name__.endswith("RMSNorm") or eps is None:
        raise StageError(
            f"cannot derive ln2.hook_normalized from a {type(norm).__name__} "
            "(RMSNorm and LayerNorm are known)"
        )
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def norm_gain(norm: nn.Module) -> torch.Tensor:
    """What the norm multiplies ``ln2.hook_normalized`` by: ``w``, or ``1 + w`` for Gemma."""
    weight = getattr(norm, "weight")  # noqa: B009
    return (1 + weight) if type(norm).__name__.startswith("Gemma") else weight


SiteFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]


@contextmanager
def on_mlp(
    model: nn.Module,
    layer: int,
    fn: SiteFn,
    *,
    input_hook: str = "mlp.hook_in",
    output_hook: str = "hook_mlp_out",
) -> Iterator[None]:
    """Call ``fn(x, out)`` at block ``layer`` on every forward call: ``x`` is the activation
    at ``input_hook``, ``out`` the one at ``output_hook``; a returned tensor replaces ``out``.

    A forward hook on the MLP's norm reads ``x`` (its input, its output, or the normalised
    value before the gain); one on the output module calls ``fn``.
    """
    input_hook = parse_hook(input_hook)[1]
    output_hook = parse_hook(output_hook, output=True)[1]
    norm, mlp, post = mlp_modules(model, layer)
    out_module = post if output_hook == "hook_mlp_out" and post is not None else mlp
    seen: dict[str, torch.Tensor] = {}

    def read(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if input_hook == "mlp.hook_in":
            seen["x"] = output
        elif input_hook == "hook_resid_mid":
            seen["x"] = args[0]
        else:
            seen["x"] = normalized(module, args[0])

    def write(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> Any:
        return fn(seen.pop("x"), output)

    handles = [norm.register_forward_hook(read), out_module.register_forward_hook(write)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
