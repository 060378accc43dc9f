"""Experiment B's traces: the ``traces`` section, and transcoder features over generation.

- ``TracesParams`` (params.yaml ``traces``): which transcoders are read and at which hook
  point (``sets``), the fidelity gate (``fidelity``), and the prompts and greedy
  generation of the traces; the traces, neurons and neuron_eval stages read it.
- ``trace_features``: greedy generation with the KV cache, left-padded so that the last
  position of every forward call is each row's last real token (the original read position -1
  of right-padded batches: a pad token for all but the longest prompt); the transcoder features
  there, one ``[steps, d_sae]`` block per prompt, kept sparse as they are collected.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from steerpipe.config import check
from steerpipe.lm.generation import generate
from steerpipe.lm.hooks import SiteFn
from steerpipe.transcoders.neurons import SparseRows
from steerpipe.transcoders.transcoder import Transcoder, on_transcoder

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


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

    A prompt's steps end with the step that produced its EOS: the forward calls that a
    finished row sits through before generation drops it are not kept.
    """
    # a row's steps in pieces: generation enters the hook again for the rows left each time
    # it drops the finished ones
    parts: dict[int, dict[int, list[SparseRows]]] = {tc.layer: {} for tc in transcoders}

    @contextmanager
    def record(rows: list[int]) -> Iterator[None]:
        with record_features(model, list(transcoders)) as records:
            yield
        for layer, per_step in records.items():
            if not per_step:
                continue
            stacked = torch.stack(per_step, dim=1)  # [batch, calls, d_sae]
            for j, i in enumerate(rows):
                parts[layer].setdefault(i, []).append(SparseRows.from_dense(stacked[j]))

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
            [
                _first_rows(SparseRows.cat(parts[tc.layer][i], tc.d_sae), n)
                for i, n in enumerate(steps)
            ],
            tc.d_sae,
        )
        for tc in transcoders
    }
    return Traces(tokens, features, steps)


def _first_rows(rows: SparseRows, n: int) -> SparseRows:
    end = int(rows.crow_indices[n])
    return SparseRows(
        rows.crow_indices[: n + 1], rows.col_indices[:end], rows.values[:end], rows.width
    )
