"""The sweep's low-noise metric: how much a cell's vector raises the log-probability of the
positive kind's step openings against the negative kind's, teacher-forced, with no sampling
and no judge.

For each held-in (training) example, the opening is the first ``n_tokens`` tokens of its step
after its prompt (prompt + step is a prefix of the model's own trace). Its log-probability is
summed over those tokens, with the vector added at ``hook_resid_pre`` of the cell's layer on
every position, as the sampling stages add it, and without. A cell's score is

    mean over positive examples of (steered - plain) - the same over negative examples,

in nats: positive means the vector makes the positive kind's openings likelier relative to the
negative kind's. Every cell scores the same examples, so cells are compared on paired data.
Rows of all cells share batches (one vector per row); right padding leaves each row's real
positions as they are alone.

The stage ``sweep_logprob`` (``dvc repro sweep_logprob``) scores the sweep's grid with it;
``sweep.metric: logprob`` makes ``steer``'s ``auto`` cell the best-scoring one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from steerpipe.lm.activations import right_pad
from steerpipe.lm.batch_sizes import fit_rows, in_batches
from steerpipe.lm.hooks import Steer
from steerpipe.lm.shared_layers import forward_shared, steering

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


def scored_rows(examples: Sequence[dict[str, Any]], n_tokens: int) -> list[tuple[list[int], int]]:
    """(prompt + opening ids, opening length) per example; an opening is at most ``n_tokens``
    of the step, and a step shorter than that is scored whole."""
    rows = []
    for ex in examples:
        opening = list(ex["step_ids"])[:n_tokens]
        if not opening:
            raise ValueError(f"example (row {ex['row']}, step {ex['step']}) has an empty step")
        rows.append((list(ex["prompt_ids"]) + opening, len(opening)))
    return rows


def opening_logprobs(
    model: PreTrainedModel,
    rows: Sequence[tuple[list[int], int]],
    steers: Sequence[Steer | None],
    *,
    pad_id: int,
    batch_size: int = 16,
    progress: bool = True,
) -> list[float]:
    """Summed log-probability of each row's last ``k`` tokens given the ones before them
    (``rows``: (ids, k)), under the row's steer (None: the plain model), in input order."""
    if len(steers) != len(rows):
        raise ValueError(f"{len(steers)} steers for {len(rows)} rows")
    out = [0.0] * len(rows)
    limit = fit_rows(model, max(len(ids) for ids, _ in rows), batch_size)
    bar = tqdm(total=len(rows), desc="logprob", unit="row", disable=not progress)

    def take(queue: deque[int], n: int) -> list[int]:
        return [queue.popleft() for _ in range(min(n, len(queue)))]

    def work(batch: list[int]) -> None:
        ids, mask = right_pad([rows[i][0] for i in batch], pad_id)
        # the head and the log-softmax only where a scored token is predicted (the token at t
        # is predicted at t - 1): over every position of the padded batch they cost 60% of the
        # body's time (2-core CPU, SmolLM2, 32 x 300 tokens: body 24 s, head 4.5 s, float64
        # log-softmax 10 s) and hold B x T x vocab floats; a position's values are the same
        # bits either way (on the CPU: tests/test_logprob.py)
        spans = {i: range(len(rows[i][0]) - rows[i][1] - 1, len(rows[i][0]) - 1) for i in batch}
        wanted = sorted({t for span in spans.values() for t in span})
        column = {t: c for c, t in enumerate(wanted)}
        # rows of one example compute the layers below their vectors once (shared_layers.py)
        starts, hooks = steering(model, [steers[i] for i in batch])
        keep = torch.tensor(wanted, device=model.device)
        logits = forward_shared(model, ids, mask, starts, hooks, logits_to_keep=keep)
        logp = torch.log_softmax(logits.double(), dim=-1)
        for j, i in enumerate(batch):
            row_ids, k = rows[i]
            targets = torch.tensor(row_ids[len(row_ids) - k :], device=logp.device)
            cols = torch.tensor([column[t] for t in spans[i]], device=logp.device)
            out[i] = float(logp[j, cols].gather(-1, targets[:, None]).sum())
        bar.update(len(batch))

    in_batches(
        deque(range(len(rows))),
        limit,
        take,
        work,
        rows=len,
        halve=lambda b: len(b) // 2,
        device=model.device,
    )
    bar.close()
    return out


def cell_score(
    plain: Sequence[float], steered: Sequence[float], positive: Sequence[bool]
) -> dict[str, float]:
    """A cell's score (see the module) from each example's plain and steered log-probability
    and whether it is of the positive kind; with the two kinds' mean changes."""
    pos = [s - p for p, s, k in zip(plain, steered, positive, strict=True) if k]
    neg = [s - p for p, s, k in zip(plain, steered, positive, strict=True) if not k]
    if not pos or not neg:
        raise ValueError("the logprob metric needs examples of both kinds")
    up, down = sum(pos) / len(pos), sum(neg) / len(neg)
    return {"score": up - down, "positive_change": up, "negative_change": down}
