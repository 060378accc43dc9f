"""Chat prompts, prompt reconstruction and the seeded choice of one labelled step per problem.

As in the original: the prompt for step ``k`` is the chat template applied to the problem
(with the generation prompt), then ``"\\n\\n".join(steps[:k]) + "\\n\\n"``, tokenised without
extra special tokens (the template already has its own). The labelled step's tokens follow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import check

Kind = Literal["conclusion", "verification", "other"]
KINDS = ("conclusion", "verification", "other")


@dataclass(frozen=True)
class PrepareParams:
    """params.yaml ``prepare``: which kinds of step to contrast and how to split them."""

    SECTION: ClassVar[str] = "prepare"
    kinds: list[Kind]  # the positive kind, then the negative
    seed: int
    min_step_tokens: int
    max_prompt_tokens: int
    test_size: int

    def __post_init__(self) -> None:
        check(
            len(self.kinds) == 2 and len(set(self.kinds)) == 2,
            "prepare.kinds",
            f"two different kinds of {KINDS}, got {self.kinds}",
        )
        check(self.min_step_tokens >= 1, "prepare.min_step_tokens", "at least 1")
        check(self.max_prompt_tokens >= 1, "prepare.max_prompt_tokens", "at least 1")
        check(self.test_size >= 1, "prepare.test_size", f"at least 1, got {self.test_size}")


def chat_prompt(tokenizer: Tokenizer, user_message: str) -> str:
    """The chat template applied to one user message, with the generation prompt."""
    return str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )
    )


def chat_prompt_ids(tokenizer: Tokenizer, user_message: str) -> list[int]:
    return list(tokenizer.encode(chat_prompt(tokenizer, user_message), add_special_tokens=False))


def reconstruct_prompt(tokenizer: Tokenizer, problem: str, steps: list[str], k: int) -> str:
    return chat_prompt(tokenizer, problem) + "\n\n".join(steps[:k]) + "\n\n"


def steps_of_kind(row: dict[str, Any], kind: str) -> list[int]:
    """Indices of a row's steps of a kind; ``other`` is every step with neither label."""
    if kind == "conclusion":
        return list(row["conclusion_steps"])
    if kind == "verification":
        return list(row["verification_steps"])
    if kind == "other":
        labelled = set(row["conclusion_steps"]) | set(row["verification_steps"])
        return [k for k in range(len(row["steps"])) if k not in labelled]
    raise ValueError(f"unknown step kind {kind!r}; expected one of {KINDS}")


def select_examples(
    rows: list[dict[str, Any]],
    tokenizer: Tokenizer,
    kind: str,
    *,
    seed: int,
    min_step_tokens: int,
    max_prompt_tokens: int,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One step of ``kind`` per problem, drawn with a seeded generator, then filtered; and how
    many drawn steps each filter dropped (``min_step_tokens``, ``max_prompt_tokens``; a step
    may fail both).

    Problems are visited in a seeded shuffled order (the original shuffled with seed 42 and
    drew the step unseeded). Each example keeps the token ids of its prompt and of its step.
    """
    rng = random.Random(f"{seed}/{kind}")
    order = list(range(len(rows)))
    rng.shuffle(order)
    examples = []
    dropped = {"min_step_tokens": 0, "max_prompt_tokens": 0}
    for r in order:
        row = rows[r]
        candidates = steps_of_kind(row, kind)
        if not candidates:
            continue
        k = rng.choice(candidates)
        prompt = reconstruct_prompt(tokenizer, row["problem"], row["steps"], k)
        prompt_ids = list(tokenizer.encode(prompt, add_special_tokens=False))
        step_ids = list(tokenizer.encode(row["steps"][k], add_special_tokens=False))
        short, long = len(step_ids) < min_step_tokens, len(prompt_ids) > max_prompt_tokens
        dropped["min_step_tokens"] += short
        dropped["max_prompt_tokens"] += long
        if short or long:
            continue
        examples.append(
            {"kind": kind, "row": r, "step": k, "prompt_ids": prompt_ids, "step_ids": step_ids}
        )
    return examples, dropped


def held_out(
    examples: list[dict[str, Any]], kind: str, n: int | None = None
) -> list[dict[str, Any]]:
    """The first ``n`` (or all) test examples of ``kind``, in the prepared order."""
    chosen = [e for e in examples if e["split"] == "test" and e["kind"] == kind]
    return chosen if n is None else chosen[:n]
