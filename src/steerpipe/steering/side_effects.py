"""What a steering vector changes besides what it targets, on a task it was not made for.

Side effects are large where they are measured (feature steering dropped MMLU from 66% to 46%,
arXiv 2602.04903; steering one behaviour degraded others by up to 76%, arXiv 2509.13450), so
the pipeline measures two: the KL divergence of the steered next-token distribution from the
plain one on neutral text (``lm/divergence.py``), and here the answer margins of another task.

``steered_margins`` scores experiment B's Yes/No questions the way experiment B does (its answer
margin at the prompt: log p(right) - log p(wrong) as the next token) under experiment A's vector
at its chosen cell and coefficient, and without it (stage ``side_effects``): a task that
steering did not target, paired question by question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from steerpipe.lm.hooks import Steer
from steerpipe.lm.prefill import left_pad
from steerpipe.lm.shared_layers import forward_shared, steering

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


def steered_margins(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[bool],
    steers: Sequence[Steer | None],
    *,
    yes_id: int,
    no_id: int,
    pad_id: int,
    batch_size: int = 32,
) -> list[float]:
    """Per row, log p(right) - log p(wrong) of the answer tokens (``yes_id`` / ``no_id``;
    ``answers[i]`` says which is right) as the next token after ``prompts[i]``, with
    ``steers[i]`` added on every position (None: the plain model). Rows are sorted by
    length and left-padded, each with the positions it has alone; rows of one prompt compute
    the layers below their vector once (``shared_layers.py``)."""
    if not len(prompts) == len(answers) == len(steers):
        raise ValueError(f"{len(prompts)} prompts, {len(answers)} answers, {len(steers)} steers")
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), list(prompts[i]), i))
    out = [0.0] * len(prompts)
    for k in range(0, len(order), batch_size):
        rows = order[k : k + batch_size]
        ids, mask = left_pad([list(prompts[i]) for i in rows], pad_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        starts, hooks = steering(model, [steers[i] for i in rows])
        logits = forward_shared(
            model, ids, mask, starts, hooks, position_ids=positions, logits_to_keep=1
        )[:, -1]
        logp = torch.log_softmax(logits.double(), dim=-1)
        for j, i in enumerate(rows):
            yes, no = float(logp[j, yes_id]), float(logp[j, no_id])
            out[i] = yes - no if answers[i] else no - yes
    return out
