"""Reasoning and memory neurons: feature traces over generation, the masks, and steering by them.

- ``trace_features``: greedy generation with the KV cache, left-padded so that the last
  position of every forward call is each row's last real token (the original read position -1
  of right-padded batches: a pad token for all but the longest prompt); the transcoder features
  there, one ``[steps, d_sae]`` block per prompt, kept sparse (CSR) as they are collected.
- ``neuron_masks``: alive (log10 firing frequency above a threshold), reasoning (alive, and
  the mean activation over all trace steps rises by more than a threshold from the baseline
  style to any other style), memory (alive and not reasoning).
- ``generate_steered``: generation in which each row may scale its own feature set at its own
  layer by its own strength, so that every condition of an evaluation shares the batches.

``TracesParams`` (params.yaml ``traces``) says which transcoders are read where and on which
prompts; the traces, neurons and neuron_eval stages read it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel

from steerpipe.config import check
from steerpipe.generation import generate
from steerpipe.hooks import SiteFn
from steerpipe.transcoders import Transcoder, on_transcoder, scale_features


@dataclass(frozen=True)
class TracesParams:
    SECTION: ClassVar[str] = "traces"
    transcoders: str  # a folder, or a hub repo id
    file: str  # each layer's file in it, with {layer}
    layers: list[int]
    input_hook: str | None  # None: as the files say
    min_fve: float | None  # the fidelity gate (None: measure only)
    fidelity_tokens: int
    chat_template: bool  # False: the raw text, as the original prompted
    templates: dict[str, str]  # prompt style -> template with {question} and {passage}
    n_steps: int  # greedy generation steps
    batch_size: int

    def __post_init__(self) -> None:
        check(bool(self.layers), "traces.layers", "a non-empty list of layer indices")
        check(bool(self.templates), "traces.templates", "at least one prompt style")
        check(self.fidelity_tokens >= 1, "traces.fidelity_tokens", "at least 1")
        check(self.n_steps >= 1, "traces.n_steps", "at least 1")
        check(self.batch_size >= 1, "traces.batch_size", "at least 1")


@dataclass
class SparseRows:
    """Rows of a ``[n, d]`` matrix in CSR form (mostly zeros: few features fire at a time)."""

    crow_indices: torch.Tensor  # [n + 1] int64
    col_indices: torch.Tensor  # [nnz] int64
    values: torch.Tensor  # [nnz] float32
    width: int

    @staticmethod
    def from_dense(dense: torch.Tensor) -> SparseRows:
        dense = dense.float().cpu()
        nonzero = dense != 0
        crow = torch.zeros(dense.shape[0] + 1, dtype=torch.long)
        crow[1:] = nonzero.sum(1).cumsum(0)
        return SparseRows(crow, nonzero.nonzero()[:, 1], dense[nonzero], dense.shape[1])

    @staticmethod
    def cat(parts: Sequence[SparseRows], width: int) -> SparseRows:
        if not parts:
            return SparseRows.from_dense(torch.zeros(0, width))
        counts = torch.cat([p.crow_indices.diff() for p in parts])
        crow = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return SparseRows(
            crow,
            torch.cat([p.col_indices for p in parts]),
            torch.cat([p.values for p in parts]),
            width,
        )

    @property
    def n_rows(self) -> int:
        return len(self.crow_indices) - 1

    def to_dense(self) -> torch.Tensor:
        rows = torch.repeat_interleave(torch.arange(self.n_rows), self.crow_indices.diff())
        dense = torch.zeros(self.n_rows, self.width)
        dense[rows, self.col_indices] = self.values
        return dense

    def column_mean(self) -> torch.Tensor:
        """The mean of every column over all rows."""
        total = torch.zeros(self.width, dtype=torch.float64)
        total.index_add_(0, self.col_indices, self.values.double())
        return (total / max(self.n_rows, 1)).float()

    def log_frequency(self, floor: float = -10.0) -> torch.Tensor:
        """log10 of the share of rows in which each column is nonzero; ``floor`` where never."""
        fired = torch.bincount(self.col_indices, minlength=self.width).double()
        share = fired / max(self.n_rows, 1)
        return torch.where(share > 0, share.clamp_min(1e-300).log10(), floor).float()

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.crow_indices": self.crow_indices,
            f"{prefix}.col_indices": self.col_indices,
            f"{prefix}.values": self.values,
        }

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], prefix: str, width: int) -> SparseRows:
        return SparseRows(
            tensors[f"{prefix}.crow_indices"],
            tensors[f"{prefix}.col_indices"],
            tensors[f"{prefix}.values"],
            width,
        )


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


def neuron_masks(
    log_frequency: torch.Tensor,
    means: dict[str, torch.Tensor],
    *,
    baseline: str,
    alive_log10_frequency: float,
    reasoning_threshold: float,
) -> dict[str, torch.Tensor]:
    """``alive``, ``reasoning`` and ``memory`` boolean masks over the features."""
    alive = log_frequency > alive_log10_frequency
    rises = torch.zeros_like(alive)
    for style, mean in means.items():
        if style != baseline:
            rises |= (mean - means[baseline]) > reasoning_threshold
    reasoning = rises & alive
    return {"alive": alive, "reasoning": reasoning, "memory": alive & ~reasoning}


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
