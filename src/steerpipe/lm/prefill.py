"""The prefill of a batch of prompts: what ``generation.generate`` computes before decoding.

Prompts are left-padded with an attention mask, so that a padded row sees what it would see
alone. What rows share is computed once: the tokens every prompt begins with (a solve stage's
instruction: ``prefix_length``, ``after_prefix``), and the layers below each row's vectors
(``shared_layers.forward_shared``). Rows of similar length run together (``length_chunks``),
each chunk without the padding its rows all have; the cache holds zeros there, which the mask
hides. Tests: tests/test_generation.py (each equals its rows prefilled alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

from steerpipe.lm.cache import GrowingCache
from steerpipe.lm.shared_layers import RowHooks, all_full_attention, forward_shared, layer_kv

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), left-padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def prefill(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    starts: Sequence[int | None],
    hooks: RowHooks,
    cache: GrowingCache,
    *,
    prefix: int = 0,
) -> None:
    """Fills ``cache`` with padded ``ids`` under ``hooks``, at the positions of the real
    tokens, so that ``_decode`` can continue from it. Rows of one prompt compute the layers
    below ``starts`` once (``shared_layers.forward_shared``); the first ``prefix`` columns,
    the same tokens in every row, run first: once for the plain model and each start layer."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    plain = None
    if prefix:
        plain = DynamicCache(config=model.config)
        with torch.no_grad():
            model(
                input_ids=ids[:1, :prefix].to(model.device),
                position_ids=positions[:1, :prefix].to(model.device),
                cache=plain,
                use_cache=True,
                logits_to_keep=1,
            )
        forward_shared(
            model, ids[:, :prefix], mask[:, :prefix], starts, hooks,
            position_ids=positions[:, :prefix], cache=cache, logits_to_keep=1,
        )  # fmt: skip
    lengths = mask[:, prefix:].sum(-1).tolist()
    chunks = [list(range(len(ids)))]
    if all_full_attention(cache):  # a sliding window's cache is not assembled from parts
        chunks = length_chunks(lengths, CHUNK_COST)
    if len(chunks) == 1:
        forward_shared(
            model, ids[:, prefix:], mask, starts, hooks, position_ids=positions[:, prefix:],
            cache=cache, plain_past=plain, logits_to_keep=1,
        )  # fmt: skip
        return
    # each chunk without the padding columns that all its rows have, into a cache of its own
    width, n_layers = ids.shape[1] - prefix, len(cache.layers)
    parts = []
    for rows in chunks:
        skip = width - max(lengths[r] for r in rows)
        keep = [*range(prefix), *range(prefix + skip, ids.shape[1])]
        part = DynamicCache(config=model.config)
        for layer in range(n_layers) if prefix else ():
            k, v = layer_kv(cache, layer)
            part.update(k[rows], v[rows], layer)
        forward_shared(
            model, ids[rows][:, prefix + skip :], mask[rows][:, keep], [starts[r] for r in rows],
            _subset(hooks, rows),
            position_ids=positions[rows][:, prefix + skip :], cache=part, plain_past=plain,
            logits_to_keep=1,
        )  # fmt: skip
        parts.append((rows, skip, part))
    for layer in range(n_layers):
        # zeros where a chunk's rows were not run: padding, which the mask hides
        keys: torch.Tensor | None = None
        values: torch.Tensor | None = None
        for rows, skip, part in parts:
            k, v = layer_kv(part, layer)
            if keys is None or values is None:
                keys = k.new_zeros((len(ids), k.shape[1], width, k.shape[3]))
                values = v.new_zeros((len(ids), v.shape[1], width, v.shape[3]))
            keys[rows, :, skip:], values[rows, :, skip:] = k[:, :, prefix:], v[:, :, prefix:]
        assert keys is not None and values is not None
        cache.update(keys, values, layer)


def _subset(hooks: RowHooks, rows: list[int]) -> RowHooks:
    """``hooks`` for a run of the batch's rows ``rows``: run row j is batch row ``rows[j]``."""
    return lambda r: hooks([rows[j] for j in r])


CHUNK_COST = 512  # padded tokens that one more forward call is worth (a prefill's chunks)


def length_chunks(lengths: Sequence[int], cost: int = CHUNK_COST) -> list[list[int]]:
    """Rows in chunks of similar length, shortest first: of the splits of the rows sorted by
    length, the one that computes the fewest padded tokens, each chunk counting ``cost``
    tokens more. A batch of prompts of 47 to 158 tokens (``steps_dataset``'s, after their
    shared instruction) prefilled in one call took 18 s on the 2-core CPU, in four 10 s."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best, cut = [0], [0]  # the fewest tokens for the first j rows, and where its last chunk starts
    for j in range(1, len(order) + 1):
        width = lengths[order[j - 1]]
        tokens, start = min((best[i] + (j - i) * width + cost, i) for i in range(j))
        best.append(tokens)
        cut.append(start)
    chunks, j = [], len(order)
    while j:
        chunks.append(order[cut[j] : j])
        j = cut[j]
    return chunks[::-1]


MIN_PREFIX = 8  # tokens that every prompt of a batch begins with, for them to run once


def prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many tokens every row begins with (also ``scoring``'s families)."""
    n = min(map(len, rows))
    for k in range(n):
        if any(r[k] != rows[0][k] for r in rows):
            return k
    return n


def after_prefix(
    rows: list[list[int]], prefix: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask): the ``prefix`` tokens all rows begin with, then each row's
    rest left-padded: padding between them, which the mask hides as it hides left padding."""
    ids, mask = left_pad([r[prefix:] for r in rows], pad_id)
    head = torch.tensor(rows[0][:prefix], dtype=torch.long)[None].expand(len(rows), -1)
    return torch.cat([head, ids], dim=1), torch.cat([torch.ones_like(head), mask], dim=1)
