"""Batched sampling on the plain HF model, each row with its own steering vector (or none).

Rows are sorted by prompt length, left-padded with an attention mask (so a padded row sees
what it would see alone) and generated with HF ``generate`` and its KV cache. Steering is an
``add_to_resid_pre`` hook, which acts on the prompt at prefill and on every decoded token.
Rows of different layers, or steered and control rows, share a batch: each layer gets a
``[batch, d_model]`` delta that is zero on the rows it does not steer. Other per-row hooks
(transcoder features, recording) come in through ``batch_hook``, which is told which input
rows each batch holds, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel
from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.hooks import add_to_resid_pre


@dataclass(frozen=True)
class Steer:
    """Add ``vector`` to the residual stream entering ``layer`` (``hook_resid_pre``)."""

    layer: int
    vector: torch.Tensor


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


def _batch_deltas(steers: Sequence[Steer | None], d_model: int) -> dict[int, torch.Tensor]:
    deltas: dict[int, torch.Tensor] = {}
    for i, s in enumerate(steers):
        if s is None:
            continue
        if s.layer not in deltas:
            deltas[s.layer] = torch.zeros(len(steers), d_model, dtype=s.vector.dtype)
        deltas[s.layer][i] = s.vector
    return deltas


def generate(
    model: PreTrainedModel,
    prompts: list[list[int]],
    *,
    steers: Sequence[Steer | None] | None = None,
    max_new_tokens: int = 10,
    temperature: float = 0.6,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    pad_id: int | None = None,
    eos_ids: list[int] | None = None,
    batch_hook: Callable[[list[int]], AbstractContextManager[object]] | None = None,
    share_prefill: bool = True,
    progress: bool = True,
) -> list[list[int]]:
    """New tokens for each prompt (cut at the first EOS, which is kept), in input order.

    Rows with the same prompt and the same steering (samples of one prompt) share a prefill:
    all but the prompt's last token run once, and the KV cache is copied to each row
    (``share_prefill=False`` prefills every row). A batch that runs out of memory is split in
    two and retried, down to a single row. ``batch_hook(rows)``, if given, is entered
    around each batch's generation (``rows``: the prompts' indices in batch order); rows are
    not shared then, since the hook may act on the prompt.

    ``temperature`` 0 means greedy. Sampling is top-p only (no top-k), as in the original.
    The same inputs, seed and batch size give the same tokens.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt")
    steers = steers if steers is not None else [None] * len(prompts)
    if len(steers) != len(prompts):
        raise ValueError(f"{len(steers)} steers for {len(prompts)} prompts")
    gen_cfg = model.generation_config
    pad = pad_id if pad_id is not None else gen_cfg.pad_token_id
    if pad is None:
        raise ValueError("no pad token id: pass pad_id")
    if eos_ids is None:
        eos = gen_cfg.eos_token_id
        eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    sample = temperature > 0
    kwargs: dict[str, object] = {"do_sample": sample, "max_new_tokens": max_new_tokens}
    if sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    out: list[list[int]] = [[] for _ in prompts]
    torch.manual_seed(seed)
    d = int(model.config.hidden_size)
    groups = _groups(prompts, steers, batch_size, share=share_prefill and batch_hook is None)
    pending = list(reversed(_pack(groups, batch_size)))
    bar = tqdm(total=len(prompts), desc="generate", unit="row", disable=not progress)
    while pending:
        batch = pending.pop()
        idx = [i for g in batch for i in g]
        try:
            new = _generate_batch(
                model, batch, prompts, steers, d, pad, eos_ids, batch_hook, kwargs
            )
        except torch.OutOfMemoryError:
            halves = _halve(batch)
            if halves is None:
                raise
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
            pending.extend(reversed(halves))  # the same rows in two smaller batches
            continue
        for row, i in zip(new, idx, strict=True):
            out[i] = _cut_at_eos(row, eos_ids)
        bar.update(len(idx))
    bar.close()
    return out


def _generate_batch(
    model: PreTrainedModel,
    batch: list[list[int]],
    prompts: list[list[int]],
    steers: Sequence[Steer | None],
    d: int,
    pad: int,
    eos_ids: list[int],
    batch_hook: Callable[[list[int]], AbstractContextManager[object]] | None,
    kwargs: dict[str, object],
) -> list[list[int]]:
    """New tokens (uncut) of the batch's rows, in batch order; a group's rows share a prefill."""
    idx = [i for g in batch for i in g]
    first = [g[0] for g in batch]  # one row per group: what is prefilled
    ids, mask = left_pad([prompts[i] for i in first], pad)
    expand = torch.tensor([j for j, g in enumerate(batch) for _ in g])
    cache = None
    if len(first) < len(idx) and min(len(prompts[i]) for i in first) > 1:
        first_deltas = _batch_deltas([steers[i] for i in first], d)
        cache = _prefill(model, ids[:, :-1], mask[:, :-1], first_deltas)
        cache.batch_select_indices(expand.to(model.device))
    ids, mask = ids[expand], mask[expand]
    deltas = _batch_deltas([steers[i] for i in idx], d)
    extra = batch_hook(idx) if batch_hook is not None else nullcontext()
    with torch.no_grad(), add_to_resid_pre(model, deltas), extra:
        result = model.generate(  # type: ignore[operator]
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            past_key_values=cache,
            pad_token_id=pad,
            eos_token_id=eos_ids or None,
            **kwargs,
        )
    return list(result[:, ids.shape[1] :].tolist())


def _halve(batch: list[list[int]]) -> list[list[list[int]]] | None:
    """Two batches with the rows of ``batch`` (None for a single row): on out-of-memory."""
    if len(batch) > 1:
        return [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
    group = batch[0]
    if len(group) > 1:
        return [[group[: len(group) // 2]], [group[len(group) // 2 :]]]
    return None


def _groups(
    prompts: list[list[int]], steers: Sequence[Steer | None], limit: int, *, share: bool
) -> list[list[int]]:
    """Rows with the same prompt and steering (up to ``limit`` a group), shortest prompt first."""
    by_key: dict[object, list[int]] = {}
    for i, (prompt, s) in enumerate(zip(prompts, steers, strict=True)):
        key: object = i
        if share:  # by content (the bytes, whatever the dtype): equal vectors in distinct tensors
            steer = None
            if s is not None:
                vec = s.vector.detach().cpu().contiguous().view(torch.uint8)
                steer = (s.layer, bytes(vec.numpy()))
            key = (tuple(prompt), steer)
        by_key.setdefault(key, []).append(i)
    groups = [g[k : k + limit] for g in by_key.values() for k in range(0, len(g), limit)]
    return sorted(groups, key=lambda g: (len(prompts[g[0]]), g[0]))


def _pack(groups: list[list[int]], batch_size: int) -> list[list[list[int]]]:
    """Consecutive groups into batches of at most ``batch_size`` rows."""
    batches: list[list[list[int]]] = []
    rows = 0
    for g in groups:
        if not batches or rows + len(g) > batch_size:
            batches.append([])
            rows = 0
        batches[-1].append(g)
        rows += len(g)
    return batches


def _prefill(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, deltas: dict[int, torch.Tensor]
) -> DynamicCache:
    """The KV cache of left-padded ``ids`` under the steering ``deltas``, with the positions
    that ``generate`` gives left-padded rows, so that it can continue from it."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    with torch.no_grad(), add_to_resid_pre(model, deltas):
        model(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            position_ids=positions.to(model.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return cache


def _cut_at_eos(tokens: list[int], eos_ids: list[int]) -> list[int]:
    for j, t in enumerate(tokens):
        if t in eos_ids:
            return tokens[: j + 1]
    return tokens


def sample_texts(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    prompts: list[list[int]],
    *,
    steers: Sequence[Steer | None],
    sampling: dict[str, Any],
    seed: int,
) -> list[str]:
    """``generate`` with the ``sampling`` section of params.yaml, decoded without special tokens."""
    outs = generate(
        model,
        prompts,
        steers=steers,
        max_new_tokens=int(sampling["max_new_tokens"]),
        temperature=float(sampling["temperature"]),
        top_p=float(sampling["top_p"]),
        seed=seed,
        batch_size=int(sampling["batch_size"]),
        pad_id=int(tokenizer.pad_token_id),
    )
    return [str(tokenizer.decode(out, skip_special_tokens=True)) for out in outs]
