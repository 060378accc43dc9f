"""Hooks on the plain HF model at the points that TransformerLens hook names denote.

``blocks.{L}.hook_resid_pre`` is the residual stream entering decoder layer L, i.e. the
``hidden_states`` argument of ``model.model.layers[L]``; a forward pre-hook there reads or edits
exactly what the bridge's hook of that name sees (tests check this against the bridge).

Every hook is a context manager that removes itself in ``finally``, so an exception inside
the block (including an out-of-memory error) never leaves a stale hook on the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

_RESID_PRE = re.compile(r"^blocks\.(\d+)\.hook_resid_pre$")


def resid_pre_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


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
