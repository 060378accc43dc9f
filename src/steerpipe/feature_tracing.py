"""Transcoder features over generation, and generation with features scaled (experiment B).

- ``trace_features``: greedy generation with the KV cache, left-padded so that the last
  position of every forward call is each row's last real token (the original read position -1
  of right-padded batches: a pad token for all but the longest prompt); the transcoder features
  there, one ``[steps, d_sae]`` block per prompt, kept sparse as they are collected.
- ``generate_steered``: generation in which each row may scale its own feature set at its own
  layer by its own strength, so that every condition of an evaluation shares the batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from steerpipe.generation import generate
from steerpipe.hooks import SiteFn
from steerpipe.neurons import SparseRows
from steerpipe.transcoders import Transcoder, on_transcoder, scale_features


@dataclass
class Traces:
    tokens: list[list[int]]  # the greedy continuation of each prompt (cut after EOS)
    features: dict[int, SparseRows]  # per layer: one row per (prompt, step), prompts in order
    steps: list[int]  # how many steps each prompt has (its rows in ``features``)


@contextmanager
def record_features(
    model: nn.Module, transcoders: list[Transcoder]
) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Per layer, the features at the last position of every forward call, ``[batch, d_sae]``
    each, read at each transcoder's own input hook. In left-padded generation with a KV cache
    that is the last real token of each step: the prompt's last token at prefill, then each new
    token as it is fed back."""
    records: dict[int, list[torch.Tensor]] = {tc.layer: [] for tc in transcoders}

    def make(tc: Transcoder) -> SiteFn:
        def keep(x: torch.Tensor, out: torch.Tensor) -> None:
            records[tc.layer].append(tc.encode(x[:, -1]).float())

        return keep

    with ExitStack() as stack:
        for tc in transcoders:
            stack.enter_context(on_transcoder(model, tc, make(tc)))
        yield records


def trace_features(
    model: PreTrainedModel,
    prompts: list[list[int]],
    transcoders: Sequence[Transcoder],
    *,
    n_steps: int,
    batch_size: int,
    pad_id: int,
    progress: bool = True,
) -> Traces:
    """Greedy generation for ``n_steps`` tokens, recording features at each step's last token.

    A prompt's steps end with the step that produced its EOS: later forward calls of the batch
    only feed padding to a finished row, and are dropped.
    """
    parts: dict[int, dict[int, SparseRows]] = {tc.layer: {} for tc in transcoders}

    @contextmanager
    def record(rows: list[int]) -> Iterator[None]:
        with record_features(model, list(transcoders)) as records:
            yield
        for layer, per_step in records.items():
            stacked = torch.stack(per_step, dim=1)  # [batch, calls, d_sae]
            for j, i in enumerate(rows):
                parts[layer][i] = SparseRows.from_dense(stacked[j])

    tokens = generate(
        model,
        prompts,
        max_new_tokens=n_steps,
        temperature=0.0,
        top_p=1.0,
        batch_size=batch_size,
        pad_id=pad_id,
        batch_hook=record,
        progress=progress,
    )
    steps = [len(out) for out in tokens]
    features = {
        tc.layer: SparseRows.cat(
            [_first_rows(parts[tc.layer][i], n) for i, n in enumerate(steps)], tc.d_sae
        )
        for tc in transcoders
    }
    return Traces(tokens, features, steps)


def _first_rows(rows: SparseRows, n: int) -> SparseRows:
    end = int(rows.crow_indices[n])
    return SparseRows(
        rows.crow_indices[: n + 1], rows.col_indices[:end], rows.values[:end], rows.width
    )


@dataclass(frozen=True)
class FeatureSteer:
    """Scale ``features`` (indices) of the transcoder at ``layer`` by ``strength``."""

    layer: int
    features: torch.Tensor
    strength: float


def generate_steered(
    model: PreTrainedModel,
    prompts: list[list[int]],
    steers: Sequence[FeatureSteer | None],
    transcoders: dict[int, Transcoder],
    *,
    mode: str = "delta",
    **generate_kwargs: Any,
) -> list[list[int]]:
    """``generate`` with each row's own feature steering (None: unhooked)."""
    if len(steers) != len(prompts):
        raise ValueError(f"{len(steers)} steers for {len(prompts)} prompts")

    @contextmanager
    def hook(rows: list[int]) -> Iterator[None]:
        scales: dict[int, torch.Tensor] = {}
        for j, i in enumerate(rows):
            s = steers[i]
            if s is None:
                continue
            if s.layer not in scales:
                scales[s.layer] = torch.ones(len(rows), transcoders[s.layer].d_sae)
            scales[s.layer][j, s.features.long()] = s.strength
        with ExitStack() as stack:
            for layer, scale in scales.items():
                stack.enter_context(scale_features(model, transcoders[layer], scale, mode=mode))
            yield

    return generate(model, prompts, batch_hook=hook, **generate_kwargs)
