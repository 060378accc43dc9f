"""The plain model's mean negative log-likelihood of generated continuations given their prompts.

A fluency measure of steered text (``steering/quality.py``): how surprised the unsteered model
is by what the steered one wrote. Teacher-forced, with no hook.

Rows share what their prompts share. Rows with equal prompts form a group; groups whose
prompts begin alike (a solve stage's: one instruction, then a short problem) form a family
when that computes fewer tokens than running them apart. A family's common prefix runs once;
each row then runs the rest of its prompt and its continuation, right-padded, on a copy of
the prefix's KV cache, in batches of rows of similar length. With causal attention a row's
real tokens never see the padding after them, so the result equals each continuation scored
alone after its prompt, up to float rounding (tests/test_scoring.py).

On the 2-core CPU the NLL of 90 solutions (``benchmarks/cpu_generation.py``) took 17 s with
each problem's prompt prefilled for its two samples, and takes 9 s with the instruction
prefilled once; batches of 2,048 tokens or fewer, since larger ones were slower (20 s at
8,192: the logits of a batch are tokens x vocabulary floats).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from steerpipe.lm.activations import right_pad
from steerpipe.lm.prefill import prefix_length

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


def continuation_nll(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 32,
    token_budget: int = 2048,
    known: dict[int, list[float]] | None = None,
    progress: bool = True,
) -> list[float | None]:
    """Mean NLL (nats per token) of each continuation after its prompt, in input order; None
    for an empty continuation. At most ``batch_size`` rows and ``token_budget`` padded tokens
    (of the rows' rests, after the shared prefix) run at once. ``known[i]``, where given for
    each token of continuation i, is its log-probability (``generate``'s ``logprobs``, for
    the rows the plain model wrote): that row is not run again."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt")
    out: list[float | None] = [None] * len(prompts)
    groups: dict[tuple[int, ...], list[int]] = {}
    known = known or {}
    for i, (prompt, cont) in enumerate(zip(prompts, continuations, strict=True)):
        if cont and len(known.get(i, ())) == len(cont):
            out[i] = -sum(known[i]) / len(cont)
        elif cont:
            groups.setdefault(tuple(prompt), []).append(i)
    bar = tqdm(total=sum(map(len, groups.values())), desc="nll", unit="row", disable=not progress)
    for prefix, rows in _families(groups, continuations):
        rests = {i: list(prompts[i][prefix:]) + list(continuations[i]) for i in rows}
        cache = _prefix_cache(model, prompts[rows[0]][:prefix])
        rows = sorted(rows, key=lambda i: len(rests[i]))
        while rows:
            n = 1
            while n < min(batch_size, len(rows)) and (n + 1) * len(rests[rows[n]]) <= token_budget:
                n += 1
            batch, rows = rows[:n], rows[n:]
            values = _score(
                model, cache, prefix, [rests[i] for i in batch],
                [len(continuations[i]) for i in batch], pad_id,
            )  # fmt: skip
            for i, value in zip(batch, values, strict=True):
                out[i] = value
            bar.update(len(batch))
    bar.close()
    return out


def _families(
    groups: dict[tuple[int, ...], list[int]], continuations: Sequence[Sequence[int]]
) -> list[tuple[int, list[int]]]:
    """(shared prefix length, rows) per family. Groups are taken in prompt order, so that
    prompts that begin alike are neighbours, and a group joins the family before it when the
    family's tokens with it (its prefix once, every row's rest) are fewer than apart. A prefix
    stops before each prompt's last token, whose logits predict the continuation's first."""

    def tokens(prefix: int, members: list[tuple[int, ...]]) -> int:
        rests = sum(
            len(prompt) - prefix + len(continuations[i])
            for prompt in members
            for i in groups[prompt]
        )
        return prefix + rests

    families: list[tuple[int, list[tuple[int, ...]]]] = []
    for prompt in sorted(groups):
        alone = len(prompt) - 1
        if families:
            prefix, members = families[-1]
            joint = min(prefix, prefix_length([members[0], prompt]))
            if tokens(joint, [*members, prompt]) < tokens(prefix, members) + tokens(
                alone, [prompt]
            ):
                families[-1] = (joint, [*members, prompt])
                continue
        families.append((alone, [prompt]))
    return [(prefix, [i for m in members for i in groups[m]]) for prefix, members in families]


def _prefix_cache(model: PreTrainedModel, prefix: Sequence[int]) -> DynamicCache | None:
    """The KV cache of ``prefix`` on one row (None when it is empty)."""
    if not prefix:
        return None
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(
            input_ids=torch.tensor([list(prefix)], device=model.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return cache


def _copies(prefix: DynamicCache, rows: int) -> DynamicCache:
    """A new cache holding ``rows`` copies of the one-row ``prefix`` cache."""
    cache = copy.deepcopy(prefix)
    cache.batch_repeat_interleave(rows)
    return cache


def _score(
    model: PreTrainedModel,
    prefix: DynamicCache | None,
    n: int,
    rests: list[list[int]],
    lengths: list[int],
    pad_id: int,
) -> list[float]:
    """Mean NLL of the last ``lengths[j]`` tokens of each ``rests[j]``, which follows the ``n``
    tokens that ``prefix`` holds."""
    device = model.device
    ids, mask = right_pad(rests, pad_id)
    rows = len(rests)
    full_mask = torch.cat([torch.ones(rows, n, dtype=mask.dtype), mask], dim=1)
    positions = torch.arange(n, n + ids.shape[1])[None].expand(rows, -1)
    with torch.no_grad():
        logits = model(
            input_ids=ids.to(device),
            attention_mask=full_mask.to(device),
            position_ids=positions.to(device),
            cache=_copies(prefix, rows) if prefix is not None else None,
            use_cache=prefix is not None,
        ).logits
    out = []
    for j, (rest, k) in enumerate(zip(rests, lengths, strict=True)):
        # the token at t is predicted at t - 1
        logp = torch.log_softmax(logits[j, len(rest) - k - 1 : len(rest) - 1].double(), dim=-1)
        targets = ids[j, len(rest) - k : len(rest)].to(device)
        out.append(float(-logp.gather(-1, targets[:, None]).mean()))
    return out
