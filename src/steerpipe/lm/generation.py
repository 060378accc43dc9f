"""Batched sampling on the plain HF model, each row with its own steering vector (or none).

Rows are sorted by prompt length (a prompt's rows together), left-padded with an attention
mask (so a padded row sees what it would see alone; the tokens every prompt of a batch begins
with come first and the padding after them) and decoded with a KV cache (``cache.py``) in a
loop that makes the forward calls HF ``generate`` makes, and drops the rows that have ended.
The prefill (``prefill.py``) computes once what rows share: their prefix, and the layers below
their vectors (``shared_layers.py``); it runs rows of similar length together. Steering is an
``add_to_resid_pre`` hook, which acts on the prompt at prefill and on every decoded token.
Rows of different layers, or steered and control rows, share a batch: each layer gets a
``[batch, d_model]`` delta that is zero on the rows it does not steer. Other per-row hooks
(transcoder features, recording) come in through ``batch_hook``, which is told which input
rows each batch holds, in order.

Sampling draws each row's noise from a hash of ``(seed, row, step, token)`` (``noise.py``): a
sample does not depend on which rows share its batch, so batch sizes, shared prefills and
out-of-memory splits never change the tokens (up to the float differences of batched kernels),
and the CPU and a GPU draw the same noise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from steerpipe.lm.batch_sizes import fit_rows, in_batches
from steerpipe.lm.cache import GrowingCache
from steerpipe.lm.hooks import Steer, add_to_resid_pre, batch_deltas
from steerpipe.lm.noise import RowNoise, Sampler, row_seed
from steerpipe.lm.prefill import MIN_PREFIX, after_prefix, left_pad, prefill, prefix_length
from steerpipe.lm.shared_layers import RowHooks

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


def generate(
    model: PreTrainedModel,
    prompts: list[list[int]],
    *,
    steers: Sequence[Steer | None] | None = None,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int = 0,
    batch_size: int = 16,
    pad_id: int | None = None,
    eos_ids: list[int] | None = None,
    batch_hook: RowHooks | None = None,
    hook_layers: Sequence[int | None] | None = None,
    first_step: Callable[[list[int], torch.Tensor], None] | None = None,
    logprobs: dict[int, list[float]] | None = None,
    share_prefill: bool = True,
    progress: bool = True,
    first_row: int = 0,
    row_keys: Sequence[int] | None = None,
) -> list[list[int]]:
    """New tokens for each prompt (cut at the first EOS, which is kept), in input order.

    Rows with the same prompt and the same steering (samples of one prompt) share a prefill:
    all but the prompt's last token run once, and the KV cache is copied to each row
    (``share_prefill=False`` prefills every row). ``batch_size`` caps the rows of a batch; on
    a GPU batches are smaller where the free memory holds fewer (``batch_sizes.fit_rows``). A
    batch that runs out of memory is retried at half its rows, and later batches keep that
    size, down to a single row. ``batch_hook(rows)``, if given, is entered
    around each batch's generation (``rows``: the prompts' indices in batch order); rows are
    not shared then, since the hook may act on the prompt. Rows of one prompt compute the
    layers below their vectors once at prefill (``shared_layers.py``); with ``batch_hook``,
    only where ``hook_layers[i]`` says the lowest layer it acts on for row i (None: none).
    ``first_step(rows, logits)``, if given, receives each batch's float32 logits of the first
    new token (before sampling), row j's being prompt ``rows[j]``'s. ``logprobs``, if given,
    receives for each row that no steer or hook touches the log-probability of each of its new
    tokens under the model (float64 log-softmax of the logits before sampling's warpers): the
    plain model's NLL of the row, which ``scoring.continuation_nll`` then need not compute.

    ``temperature`` 0 means greedy. Sampling is top-p only (no top-k), as in the original;
    row i's samples depend only on its prompt, steering, ``seed`` and ``first_row + i``, not on
    the batch: rows run alone with their ``first_row + i`` sample what they sample together.
    ``row_keys[i]``, where given, replaces ``first_row + i``: a key that does not move when rows
    are added or removed around it.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt")
    if row_keys is not None and len(row_keys) != len(prompts):
        raise ValueError(f"{len(row_keys)} row keys for {len(prompts)} prompts")
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
    # sampling as greedy decoding of Gumbel-perturbed logits, the noise drawn per row
    kwargs: dict[str, object] = {"do_sample": False, "max_new_tokens": max_new_tokens}
    out: list[list[int]] = [[] for _ in prompts]
    if hook_layers is not None and len(hook_layers) != len(prompts):
        raise ValueError(f"{len(hook_layers)} hook layers for {len(prompts)} prompts")
    d = int(model.config.hidden_size)
    longest = max(len(p) for p in prompts) + max_new_tokens
    limit = fit_rows(model, longest, batch_size)
    queue = deque(_groups(prompts, steers, limit, share=share_prefill and batch_hook is None))
    bar = tqdm(total=len(prompts), desc="generate", unit="row", disable=not progress)

    def hooks(rows: list[int]) -> AbstractContextManager[object]:
        """The steering and ``batch_hook`` of prompts ``rows``, in that order."""
        stack = ExitStack()
        stack.enter_context(add_to_resid_pre(model, batch_deltas([steers[i] for i in rows], d)))
        if batch_hook is not None:
            stack.enter_context(batch_hook(rows))
        return stack

    def start(i: int) -> int | None:
        """The lowest layer the hooks act on for prompt i (None: none); ``forward_shared``."""
        layers = [] if steers[i] is None else [steers[i].layer]  # type: ignore[union-attr]
        if batch_hook is not None:
            if hook_layers is None:
                return 0
            hook = hook_layers[i]
            layers += [] if hook is None else [hook]
        return min(layers) if layers else None

    # a hook that does not say where it acts may act on the prompt's every layer
    share_layers = share_prefill and (batch_hook is None or hook_layers is not None)

    def work(batch: list[list[int]]) -> None:
        idx = [i for g in batch for i in g]
        sampler = None
        if temperature > 0:
            keys = [first_row + i if row_keys is None else row_keys[i] for i in idx]
            sampler = Sampler(temperature, top_p, RowNoise([row_seed(seed, key) for key in keys]))
        plain: dict[int, list[float]] | None = None
        if logprobs is not None:
            plain = {i: [] for i in idx if start(i) is None}
        new = _generate_batch(
            model, batch, prompts, hooks, start, pad, eos_ids, kwargs, sampler,
            share_layers=share_layers, first_step=first_step, logprobs=plain,
        )  # fmt: skip
        for row, i in zip(new, idx, strict=True):
            out[i] = _cut_at_eos(row, eos_ids)
        if logprobs is not None and plain:
            logprobs.update(plain)
        bar.update(len(idx))

    def rows(batch: list[list[int]]) -> int:
        return sum(map(len, batch))

    in_batches(
        queue, limit, _take, work, rows=rows, halve=lambda b: rows(b) // 2, device=model.device
    )
    bar.close()
    return out


def _generate_batch(
    model: PreTrainedModel,
    batch: list[list[int]],
    prompts: list[list[int]],
    hooks: RowHooks,
    start: Callable[[int], int | None],
    pad: int,
    eos_ids: list[int],
    kwargs: dict[str, object],
    sampler: Sampler | None,
    *,
    share_layers: bool,
    first_step: Callable[[list[int], torch.Tensor], None] | None,
    logprobs: dict[int, list[float]] | None,
) -> list[list[int]]:
    """New tokens (uncut) of the batch's rows, in batch order; a group's rows share a prefill,
    and with ``share_layers`` groups of one prompt the layers below their hooks. ``logprobs``'s
    rows (prompts' indices) get their tokens' log-probabilities. ``sampler`` picks each step's
    tokens (None: greedy)."""
    idx = [i for g in batch for i in g]
    first = [g[0] for g in batch]  # one row per group: what is prefilled
    expand = torch.tensor([j for j, g in enumerate(batch) for _ in g])
    new_tokens = kwargs["max_new_tokens"]
    assert isinstance(new_tokens, int)
    starts = [start(i) for i in first]
    shortest = min(len(prompts[i]) for i in first)
    # what every prefill begins with (a solve stage's instruction), leaving each a token
    prefix = 0
    if share_layers and len(first) > 1:
        prefix = min(prefix_length([prompts[i] for i in first]), shortest - 2)
        prefix = prefix if prefix >= MIN_PREFIX else 0
    repeated = share_layers and len({tuple(prompts[i]) for i in first}) < len(first)
    share = (len(first) < len(idx) or repeated or prefix > 0) and shortest > 1
    if prefix:
        ids, mask = after_prefix([prompts[i] for i in first], prefix, pad)
    else:
        ids, mask = left_pad([prompts[i] for i in first], pad)
    # a cache that generation_config names is HF's to build (benchmarks/steering.py --variants)
    if model.generation_config.cache_implementation is not None and not share:
        if first_step is not None:
            raise ValueError("first_step needs generate's own cache")
        if logprobs is not None:
            logprobs.clear()  # the caller scores them
        ids, mask = ids[expand], mask[expand]
        processors = {} if sampler is None else {"logits_processor": sampler.processors()}
        with torch.no_grad(), hooks(idx):
            result = model.generate(  # type: ignore[operator]
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                pad_token_id=pad,
                eos_token_id=eos_ids or None,
                **kwargs,
                **processors,
            )
        return list(result[:, ids.shape[1] :].tolist())
    cache = GrowingCache(model.config, ids.shape[1] + new_tokens)
    if share:
        prefill(
            model, ids[:, :-1], mask[:, :-1], starts, lambda r: hooks([first[j] for j in r]), cache,
            prefix=prefix,
        )  # fmt: skip
        cache.batch_select_indices(expand.to(model.device))
    ids, mask = ids[expand], mask[expand]
    # the batch rows (positions in ``idx``) whose log-probabilities are asked for, if any
    scored: dict[int, list[float]] | None = None
    if logprobs:
        scored = {j: [] for j, i in enumerate(idx) if i in logprobs}
    new = _decode(
        model, ids, mask, cache, steps=new_tokens, sampler=sampler, eos_ids=eos_ids,
        hooks=lambda rows: hooks([idx[r] for r in rows]),
        first_step=None if first_step is None else lambda logits: first_step(idx, logits),
        logprobs=scored,
    )  # fmt: skip
    if logprobs is not None and scored is not None:
        logprobs.update({idx[j]: values for j, values in scored.items()})
    return new


def _decode(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    cache: GrowingCache,
    *,
    steps: int,
    sampler: Sampler | None,
    eos_ids: list[int],
    hooks: RowHooks,
    first_step: Callable[[torch.Tensor], None] | None = None,
    logprobs: dict[int, list[float]] | None = None,
) -> list[list[int]]:
    """HF ``generate``'s greedy loop (the same forward calls, so the same logits) that drops
    rows once they have written an EOS: each row's new tokens, up to its first EOS.

    HF decodes a finished row until the whole batch is done; a default run's solutions end
    after 52 of their 128 tokens on average. Rows are dropped once the finished ones are an
    eighth of the batch, since each drop copies the KV cache; the finished rows kept until
    then are computed and ignored (90 solutions: 35 s with none dropped, 24 s dropping each
    as it finishes, 22 s by eighths; ``benchmarks/cpu_generation.py``). ``hooks(rows)``
    enters the steering of the live rows (positions in the batch); it is re-entered after
    each drop. ``sampler`` picks each step's tokens (None: the argmax). ``first_step(logits)``
    receives the first step's logits (before ``sampler``);
    ``logprobs[j]``, for the rows j it holds, row j's log-probability of each token it keeps,
    from them; the other rows' are not computed (a steered row's would be the steered model's,
    which no caller wants: a float64 log-softmax over the vocabulary each step; `solve_steered`,
    every row steered, 213 s against 218 s beside the old code, one thread each).
    """
    device = model.device
    ids, mask = ids.to(device), mask.to(device)
    past = cache.get_seq_length()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    attention = None if bool((mask == 1).all()) else mask  # as generate drops it
    inputs, positions = ids[:, past:], positions[:, past:]
    live = list(range(ids.shape[0]))  # each batch row's place in the input batch
    out: list[list[int]] = [[] for _ in live]
    done = torch.zeros(len(live), dtype=torch.bool, device=device)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    stack = ExitStack()
    try:
        stack.enter_context(hooks(live))
        for step in range(steps):
            with torch.no_grad():
                logits = (
                    model(
                        input_ids=inputs,
                        attention_mask=attention,
                        position_ids=positions,
                        cache=cache,
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    .logits[:, -1]
                    .to(copy=True, dtype=torch.float32)
                )
            if step == 0 and first_step is not None:
                first_step(logits)
            # the model's own distribution, as continuation_nll's, of the rows that want it (a
            # row's log-softmax has the same bits whichever rows are beside it)
            asked = logprobs if logprobs is not None else {}
            wanted = [k for k, row in enumerate(live) if row in asked]
            at = torch.tensor(wanted, dtype=torch.long, device=device)
            logp = torch.log_softmax(logits[at].double(), -1) if wanted else None
            new = sampler(ids, logits) if sampler is not None else logits.argmax(-1)  # type: ignore[arg-type]
            finished = done.tolist()
            for row, token, ended in zip(live, new.tolist(), finished, strict=True):
                if not ended:
                    out[row].append(token)
            if logp is not None:
                values = logp.gather(-1, new[at][:, None])[:, 0].tolist()
                for k, value in zip(wanted, values, strict=True):
                    if not finished[k]:
                        asked[live[k]].append(value)
            done |= torch.isin(new, eos)
            if bool(done.all()) or step == steps - 1:
                break
            ids = torch.cat([ids, new[:, None]], dim=-1)
            inputs, positions = new[:, None], positions[:, -1:] + 1
            if attention is not None:
                attention = torch.cat([attention, attention.new_ones(len(live), 1)], dim=-1)
            if 8 * int(done.sum()) >= len(live):
                keep = (~done).nonzero().flatten()
                stack.close()
                cache.batch_select_indices(keep)
                if sampler is not None:
                    sampler.select(keep)
                ids, inputs, positions = ids[keep], inputs[keep], positions[keep]
                attention = attention[keep] if attention is not None else None
                live = [live[k] for k in keep.tolist()]
                done = done[keep]
                stack = ExitStack()
                stack.enter_context(hooks(live))
    finally:
        stack.close()
    return out


def _groups(
    prompts: list[list[int]], steers: Sequence[Steer | None], limit: int, *, share: bool
) -> list[list[int]]:
    """Rows with the same prompt and steering (up to ``limit`` a group), shortest prompt first,
    a prompt's groups together."""
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
    # the groups of one prompt next to each other, so that a batch holds them together
    # (shared_layers.py)
    seen: dict[tuple[int, ...], int] = {}
    first = [seen.setdefault(tuple(p), i) for i, p in enumerate(prompts)]
    return sorted(groups, key=lambda g: (len(prompts[g[0]]), first[g[0]], g[0]))


def _take(queue: deque[list[int]], limit: int) -> list[list[int]]:
    """The next batch: consecutive groups up to ``limit`` rows, or the first ``limit`` rows of
    a group that alone is larger (the rest stays queued)."""
    batch: list[list[int]] = []
    rows = 0
    while queue and rows + len(queue[0]) <= limit:
        batch.append(queue.popleft())
        rows += len(batch[-1])
    if not batch:
        group = queue.popleft()
        batch, rest = [group[:limit]], group[limit:]
        queue.appendleft(rest)
    return batch


def _cut_at_eos(tokens: list[int], eos_ids: list[int]) -> list[int]:
    for j, t in enumerate(tokens):
        if t in eos_ids:
            return tokens[: j + 1]
    return tokens
