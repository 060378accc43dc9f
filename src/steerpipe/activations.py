"""Batched capture of ``blocks.{L}.hook_resid_pre`` at a few positions of each sequence.

Sequences are sorted by length and batched under a token budget, right-padded: with causal
attention the tokens we read never see the padding, so a batched row equals the row alone.
Only the requested positions are kept, and the forward stops after the last requested layer
(the final norm and the unembedding are never run).
"""

from __future__ import annotations

import contextlib

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from steerpipe.hooks import HiddenFn, on_resid_pre


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
    progress: bool = True,
) -> torch.Tensor:
    """``[n_sequences, len(layers), n_positions, d_model]`` in float32.

    Row i holds the residual stream entering each layer at tokens
    ``starts[i] .. starts[i] + n_positions - 1`` of ``sequences[i]``.
    """
    if len(sequences) != len(starts):
        raise ValueError(f"{len(sequences)} sequences but {len(starts)} starts")
    for i, (seq, s) in enumerate(zip(sequences, starts, strict=True)):
        if s < 0 or s + n_positions > len(seq):
            raise ValueError(
                f"sequence {i}: positions {s}..{s + n_positions - 1} outside its {len(seq)} tokens"
            )
    d = int(model.config.hidden_size)
    out = torch.zeros(len(sequences), len(layers), n_positions, d, dtype=torch.float32)
    if not sequences:
        return out
    offsets = torch.arange(n_positions)
    batches = token_batches([len(s) for s in sequences], token_budget)
    for batch in tqdm(batches, desc="activations", unit="batch", disable=not progress):
        ids, mask = right_pad([sequences[i] for i in batch], pad_id)
        where = torch.tensor([starts[i] for i in batch])[:, None] + offsets  # [b, k]
        got = _read_batch(model, ids, mask, where, layers)
        for li, layer in enumerate(layers):
            out[batch, li] = got[layer]
    return out


def token_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indices grouped longest first, each group's padded size (rows x longest) in budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


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
