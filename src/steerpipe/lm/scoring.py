"""The plain model's mean negative log-likelihood of generated continuations given their prompts.

A fluency measure of steered text (``steering/quality.py``): how surprised the unsteered model
is by what the steered one wrote. Teacher-forced, with no hook. Continuations of one prompt
share its prefill: the prompt runs once, its KV cache is copied to each continuation's row, and
the continuations run right-padded (with causal attention a row's real tokens never see the
padding after them), so the result equals each continuation scored alone after its prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel

from steerpipe.lm.activations import right_pad


def continuation_nll(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 32,
    progress: bool = True,
) -> list[float | None]:
    """Mean NLL (nats per token) of each continuation after its prompt, in input order; None
    for an empty continuation. Rows with equal prompts share one prefill; at most
    ``batch_size`` continuations run at once."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt")
    out: list[float | None] = [None] * len(prompts)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (prompt, cont) in enumerate(zip(prompts, continuations, strict=True)):
        if cont:
            groups.setdefault(tuple(prompt), []).append(i)
    bar = tqdm(total=sum(map(len, groups.values())), desc="nll", unit="row", disable=not progress)
    for prompt, rows in groups.items():
        for k in range(0, len(rows), batch_size):
            batch = rows[k : k + batch_size]
            for i, value in zip(
                batch, _score(model, prompt, [continuations[i] for i in batch], pad_id), strict=True
            ):
                out[i] = value
            bar.update(len(batch))
    bar.close()
    return out


def _score(
    model: PreTrainedModel, prompt: tuple[int, ...], conts: list[Sequence[int]], pad_id: int
) -> list[float]:
    device = model.device
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        first = model(
            input_ids=torch.tensor([prompt], device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[0, -1]
        cache.batch_repeat_interleave(len(conts))
        ids, mask = right_pad([list(c) for c in conts], pad_id)
        n = len(prompt)
        full_mask = torch.cat([torch.ones(len(conts), n, dtype=mask.dtype), mask], dim=1)
        positions = torch.arange(n, n + ids.shape[1])[None].expand(len(conts), -1)
        logits = model(
            input_ids=ids.to(device),
            attention_mask=full_mask.to(device),
            position_ids=positions.to(device),
            cache=cache,
            use_cache=True,
        ).logits
    # the token at t is predicted at t - 1; the first one by the prompt's last position
    logits = torch.cat([first[None, None].expand(len(conts), 1, -1), logits[:, :-1]], dim=1)
    logp = torch.log_softmax(logits.double(), dim=-1)
    token_logp = logp.gather(-1, ids.to(device)[..., None])[..., 0]
    return [float(-token_logp[j, : len(c)].mean()) for j, c in enumerate(conts)]
