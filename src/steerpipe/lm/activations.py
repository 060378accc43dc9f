"""Batched capture of ``blocks.{L}.hook_resid_pre`` at a few positions of each sequence.

Sequences are sorted by length and batched under a token budget, right-padded: with causal
attention the tokens we read never see the padding, so a batched row equals the row alone.
Rows can be written straight into a tensor mapped onto a file (``storage.tensor_file``).
Only the requested positions are kept, and the forward stops after the last requested layer
(the final norm and the unembedding are never run).
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from steerpipe.lm.batch_sizes import fit_tokens, in_batches
from steerpipe.lm.hooks import HiddenFn, on_resid_pre

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


class StopForward(Exception):
    """Raised by a hook after the last layer a caller needs: the rest of the forward is skipped."""


def capture_resid_pre(
    model: PreTrainedModel,
    sequences: list[list[int]],
    starts: list[int],
    *,
    layers: list[int],
    n_positions: int,
    token_budget: int = 8192,
    pad_id: int = 0,
    out: torch.Tensor | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """``[n_sequences, len(layers), n_positions, d_model]`` in float32.

    Row i holds the residual stream entering each layer at tokens
    ``starts[i] .. starts[i] + n_positions - 1`` of ``sequences[i]``. The rows are written
    into ``out`` if given (``storage.tensor_file`` maps it onto a file, so that a dump of any
    size streams to disk), else into a new tensor.

    Memory: a batch holds at most ``token_budget`` padded tokens, fewer on a GPU whose free
    memory holds fewer (``batch_sizes.fit_tokens``); besides the model, the device holds one
    batch's forward up to the last requested layer, and the host one batch's rows
    (``rows x len(layers) x n_positions x d_model`` floats). A batch that runs out of memory
    is retried at half the budget, which later batches keep.
    """
    if len(sequences) != len(starts):
        raise ValueError(f"{len(sequences)} sequences but {len(starts)} starts")
    for i, (seq, s) in enumerate(zip(sequences, starts, strict=True)):
        if s < 0 or s + n_positions > len(seq):
            raise ValueError(
                f"sequence {i}: positions {s}..{s + n_positions - 1} outside its {len(seq)} tokens"
            )
    shape = (len(sequences), len(layers), n_positions, int(model.config.hidden_size))
    if out is None:
        out = torch.zeros(shape, dtype=torch.float32)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, the capture needs {shape}")
    if not sequences:
        return out
    lengths = [len(s) for s in sequences]
    budget = fit_tokens(model, token_budget, max(lengths))
    queue = deque(sorted(range(len(lengths)), key=lambda i: -lengths[i]))
    offsets = torch.arange(n_positions)
    bar = tqdm(total=len(sequences), desc="activations", unit="row", disable=not progress)

    def work(batch: list[int]) -> None:
        ids, mask = right_pad([sequences[i] for i in batch], pad_id)
        where = torch.tensor([starts[i] for i in batch])[:, None] + offsets  # [b, k]
        got = _read_batch(model, ids, mask, where, layers)
        for li, layer in enumerate(layers):
            out[batch, li] = got[layer]
        bar.update(len(batch))

    in_batches(
        queue,
        budget,
        lambda q, limit: _take_tokens(q, lengths, limit),
        work,
        rows=len,
        halve=lambda b: len(b) * lengths[b[0]] // 2,  # the padded size; b[0] is the longest
        device=model.device,
    )
    bar.close()
    return out


def token_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indices grouped longest first, each group's padded size (rows x longest) in budget."""
    queue = deque(sorted(range(len(lengths)), key=lambda i: -lengths[i]))
    batches = []
    while queue:
        batches.append(_take_tokens(queue, lengths, token_budget))
    return batches


def _take_tokens(queue: deque[int], lengths: list[int], token_budget: int) -> list[int]:
    """The next batch from a queue sorted longest first: at least one row, then rows while
    the padded size (rows x the first row's length) stays in budget."""
    batch = [queue.popleft()]
    while queue and (len(batch) + 1) * lengths[batch[0]] <= token_budget:
        batch.append(queue.popleft())
    return batch


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _read_batch(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    where: torch.Tensor,
    layers: list[int],
) -> dict[int, torch.Tensor]:
    """resid_pre of each layer at ``where`` ([batch, k] token indices), as float32 on the CPU."""
    rows = torch.arange(ids.shape[0])[:, None]
    last = max(layers)
    got: dict[int, torch.Tensor] = {}

    def reader(layer: int) -> HiddenFn:
        def read(hidden: torch.Tensor) -> None:
            got[layer] = hidden[rows, where.to(hidden.device)].float().cpu()
            if layer == last:
                raise StopForward  # nothing after the last requested layer is needed

        return read

    with (
        torch.no_grad(),
        on_resid_pre(model, {layer: reader(layer) for layer in layers}),
        contextlib.suppress(StopForward),
    ):
        model.get_decoder()(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
    return got
