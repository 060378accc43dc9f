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


class _StopForward(Exception):
    pass


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
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * len(sequences[batches[-1][0]]) <= token_budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    offsets = torch.arange(n_positions)
    for batch in tqdm(batches, desc="activations", unit="batch", disable=not progress):
        width = len(sequences[batch[0]])
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, i in enumerate(batch):
            ids[j, : len(sequences[i])] = torch.tensor(sequences[i])
            mask[j, : len(sequences[i])] = 1
        where = torch.tensor([starts[i] for i in batch])[:, None] + offsets  # [b, k]
        got = _read_batch(model, ids, mask, where, layers)
        for li, layer in enumerate(layers):
            out[batch, li] = got[layer]
    return out


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
                raise _StopForward  # nothing after the last requested layer is needed

        return read

    with (
        torch.no_grad(),
        on_resid_pre(model, {layer: reader(layer) for layer in layers}),
        contextlib.suppress(_StopForward),
    ):
        model.get_decoder()(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
    return got
