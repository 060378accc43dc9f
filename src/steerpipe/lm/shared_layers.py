"""Forward passes in which rows of one prompt under different steering vectors compute the
layers below their vectors once.

A vector added at ``blocks.{L}.hook_resid_pre`` leaves layers 0 to L-1 as the plain model
computes them. Experiment A runs each held-out prompt under many vectors (the sweep: 40 cells x
3 coefficients at layers 3 to 24 of 30; steer: 7 conditions at one layer, and control), and
ran every one through all 30 layers. ``forward_shared`` runs each distinct prompt once through
the plain model, keeps the residual stream entering each layer a row starts at, and runs each
row only from its vector's layer up (``starting_at``); an unsteered row is the plain run's.
``tests/test_shared_layers.py`` checks the logits and the KV cache against a full forward.

Used by ``generation.py``'s shared prefill and ``steering/logprob.py``.

    with starting_at(model, 12, resid):  # resid: what enters layer 12, [batch, tokens, d]
        logits = model(input_ids=ids).logits  # layers 0-11 pass their input through
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import Cache, DynamicCache
from transformers.cache_utils import DynamicLayer

from steerpipe.lm.cache import GrowingLayer
from steerpipe.lm.hooks import Steer, add_to_resid_pre, batch_deltas, decoder_layers, on_resid_pre

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


def _passthrough(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return hidden_states


@contextmanager
def starting_at(model: nn.Module, layer: int, resid: torch.Tensor) -> Iterator[None]:
    """Forward calls compute decoder layers ``layer`` and up only, with ``resid`` as the input
    of layer ``layer`` (before any other hook there, so steering adds to it). Layers below
    return their input unchanged and write no KV cache; the model's own loop still calls every
    layer, so per-layer settings (sliding-window masks, rotary tables) stay with their layer."""
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} is outside the model's {len(layers)} layers")

    def inject(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (resid, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": resid}

    # an instance ``forward`` (accelerate's device hooks) is put back as it was
    saved = [block.__dict__.get("forward") for block in layers[:layer]]
    handle = layers[layer].register_forward_pre_hook(inject, with_kwargs=True, prepend=True)
    try:
        for block in layers[:layer]:
            block.__dict__["forward"] = _passthrough
        yield
    finally:
        handle.remove()
        for block, forward in zip(layers[:layer], saved, strict=True):
            if forward is None:
                block.__dict__.pop("forward", None)
            else:
                block.__dict__["forward"] = forward


@contextmanager
def recording_inputs(model: nn.Module, layers: Iterable[int]) -> Iterator[dict[int, torch.Tensor]]:
    """The residual stream entering each of ``layers`` (``hook_resid_pre``) in the last
    forward call inside, by layer: what ``starting_at`` takes."""
    seen: dict[int, torch.Tensor] = {}

    def keep(layer: int) -> Callable[[torch.Tensor], None]:
        def fn(hidden: torch.Tensor) -> None:
            seen[layer] = hidden

        return fn

    with on_resid_pre(model, {layer: keep(layer) for layer in layers}):
        yield seen


RowHooks = Callable[[list[int]], AbstractContextManager[object]]


def steering(model: nn.Module, steers: Sequence[Steer | None]) -> tuple[list[int | None], RowHooks]:
    """``forward_shared``'s ``starts`` and ``hooks`` for rows steered by ``steers`` (None: the
    plain model)."""
    d = int(getattr(model.config, "hidden_size"))  # noqa: B009

    def hooks(rows: list[int]) -> AbstractContextManager[object]:
        return add_to_resid_pre(model, batch_deltas([steers[r] for r in rows], d))

    return [None if s is None else s.layer for s in steers], hooks


def forward_shared(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    starts: Sequence[int | None],
    hooks: RowHooks,
    *,
    position_ids: torch.Tensor | None = None,
    cache: Cache | None = None,
    plain_past: Cache | None = None,
    logits_to_keep: int | torch.Tensor = 0,
) -> torch.Tensor:
    """The logits of ``model(ids, mask)`` under ``hooks(rows)`` (a context manager acting on
    the batch's rows ``rows``, in that order, e.g. ``steering``'s), and ``cache``, if given,
    filled for every row as that forward would fill it. ``starts[i]`` is the lowest layer at
    which the hooks act on row i (None: not at all); rows with equal ids and mask compute the
    layers below that once, unhooked. Where that would compute no fewer layers, or with a
    cache holding other than full-attention layers, it is the one forward.

    A ``cache`` that already holds tokens (a prefix every row shares, filled by this function)
    needs ``plain_past``: the plain model's cache of those tokens on one row, which is what
    every row's cache holds below its start layer; ``mask`` then covers them too."""
    n_layers = len(decoder_layers(model))
    device = model.device
    ids, mask = ids.to(device), mask.to(device)
    positions = position_ids.to(device) if position_ids is not None else None
    distinct: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    inverse = [
        distinct.setdefault((tuple(i), tuple(m)), len(distinct))
        for i, m in zip(ids.tolist(), mask.tolist(), strict=True)
    ]
    first = [n_layers if start is None else start for start in starts]
    # layers computed, every row being as wide as the batch
    shared = len(distinct) * n_layers + sum(n_layers - start for start in first)
    full_attention = cache is None or all_full_attention(cache)
    past = cache.get_seq_length() if cache is not None else 0
    if past and plain_past is None:
        raise ValueError("a cache that holds tokens needs plain_past")

    def run(
        rows: list[int], into: Cache | None, hooked: bool, start: int = 0, resid: Any = None
    ) -> torch.Tensor:
        """The logits of rows ``rows``, filling ``into``: hooked or not, from layer ``start``
        up with ``resid`` entering it where given."""
        index = torch.tensor(rows, device=device)
        with torch.no_grad(), ExitStack() as stack:
            if resid is not None:
                stack.enter_context(starting_at(model, start, resid))
            if hooked:
                stack.enter_context(hooks(rows))
            return model(
                input_ids=ids[index],
                attention_mask=mask[index],
                position_ids=positions[index] if positions is not None else None,
                cache=into,
                use_cache=into is not None,
                logits_to_keep=logits_to_keep,
            ).logits

    if shared >= len(starts) * n_layers or not full_attention:
        return run(list(range(len(starts))), cache, hooked=True)

    def new_cache(rows: list[int], plain: bool) -> Cache | None:
        """A cache for a run of ``rows``: empty, or holding the tokens before ``ids`` as the
        plain model (``plain``) or as each row's own hooks left them."""
        if cache is None:
            return None
        part = DynamicCache(config=model.config)
        for layer in range(n_layers) if past else ():
            source = plain_past if plain else cache
            assert source is not None
            keys, values = layer_kv(source, layer)
            index = [0] * len(rows) if plain else rows
            part.update(keys[index], values[index], layer)
        return part

    firsts = [inverse.index(k) for k in range(len(distinct))]  # the plain run's rows
    layers = sorted({start for start in first if start < n_layers})
    base_cache = new_cache(firsts, plain=True)
    with recording_inputs(model, layers) as seen:
        base_logits = run(firsts, base_cache, hooked=False)
    logits = base_logits.new_empty((len(starts), *base_logits.shape[1:]))
    pieces: list[tuple[list[int], int, Cache | None]] = []
    plain = [i for i, start in enumerate(first) if start == n_layers]
    if plain:
        logits[plain] = base_logits[[inverse[i] for i in plain]]
    for layer in layers:
        rows = [i for i, start in enumerate(first) if start == layer]
        part = new_cache(rows, plain=False)
        resid = seen[layer][[inverse[i] for i in rows]]
        logits[rows] = run(rows, part, hooked=True, start=layer, resid=resid)
        pieces.append((rows, layer, part))
    if cache is not None:
        assert base_cache is not None
        _assemble(cache, base_cache, inverse, pieces, n_layers, past)
    return logits


def _assemble(
    cache: Cache,
    base: Cache,
    inverse: list[int],
    pieces: list[tuple[list[int], int, Cache | None]],
    n_layers: int,
    past: int,
) -> None:
    """Appends to ``cache`` the tokens after its first ``past``: row i's layers below its start
    layer from the plain run of its ids (row ``inverse[i]`` of ``base``), the layers from there
    up from its own run."""
    for layer in range(n_layers):
        keys, values = layer_kv(base, layer)
        keys, values = keys[inverse, :, past:], values[inverse, :, past:]
        for rows, start, part in pieces:
            if layer >= start:
                assert part is not None
                k, v = layer_kv(part, layer)
                keys[rows], values[rows] = k[:, :, past:], v[:, :, past:]
        cache.update(keys, values, layer)


def all_full_attention(cache: Cache) -> bool:
    """Whether every layer of ``cache`` holds every position (no sliding window)."""
    return all(type(x) in (DynamicLayer, GrowingLayer) for x in cache.layers)


def layer_kv(cache: Cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values that ``cache`` holds at ``layer``."""
    entry = cache.layers[layer]
    assert isinstance(entry, DynamicLayer) and entry.keys is not None and entry.values is not None
    return entry.keys, entry.values
