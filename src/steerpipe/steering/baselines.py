"""The steer stage's prompting baselines: would a prompt have done what the vector does?

AxBench reports a prompting baseline beside every steering method, and "Controlling Thinking
Speed" (arXiv 2507.03704) found that forcing a reasoning model's opening cuts its tokens. Two
baselines, with no vector, on the steer stage's prompts, seeds and judges:

- ``instruction``: the model's answer so far is ended as its turn, and a user turn asks it
  ``steer.instruction`` through its own chat template (``chat.ask_ids``); what it writes in
  its next turn is the sample.
- ``prefill``: the step begins with the positive kind's most frequent opening of
  ``steer.prefill_tokens`` tokens among the vector's own (training) examples (``opener``; on
  the default run "The answer is"), and the model writes on. It reaches the concluding label
  by construction, so it is compared on the clean rate: whether what follows the opener is
  fluent.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import StageError
from steerpipe.lm.chat import ask_ids
from steerpipe.steering.sampling import Prompting
from steerpipe.steering.steer import SteerParams


def opener(examples: list[dict[str, Any]], kind: str, n_tokens: int) -> list[int]:
    """The most frequent first ``n_tokens`` tokens of ``kind``'s training steps that have as
    many (ties: the one met first)."""
    openings = Counter(
        tuple(e["step_ids"][:n_tokens])
        for e in examples
        if e["kind"] == kind and e["split"] == "train" and len(e["step_ids"]) >= n_tokens
    )
    if not openings:
        raise StageError(f"steer.prefill_tokens: no {kind} training step has {n_tokens} tokens")
    return list(openings.most_common(1)[0][0])


def baselines(
    p: SteerParams, tokenizer: Tokenizer, examples: list[dict[str, Any]], kind: str
) -> dict[str, Prompting]:
    """The prompting baselines by name (``instruction``, ``prefill``), as ``steer`` asks."""
    out = {}
    if p.instruction is not None:
        out["instruction"] = Prompting(ask=tuple(ask_ids(tokenizer, p.instruction)))
    if p.prefill_tokens:
        out["prefill"] = Prompting(prefill=tuple(opener(examples, kind, p.prefill_tokens)))
    return out


def baseline_conditions(
    cell: dict[str, Any], prompted: dict[str, Prompting]
) -> list[tuple[dict[str, Any], Prompting]]:
    """The baselines as the steer stage's conditions: at its cell, with no vector."""
    fields = {"coefficient": 0.0, "vector_norm": 0.0}
    return [({**cell, "condition": name, **fields}, how) for name, how in prompted.items()]
