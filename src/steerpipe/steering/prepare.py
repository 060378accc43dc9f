"""Prepared examples (``prepare``): a labelled step's prompt, and the seeded choice of one step
per problem and kind.

The prompt of step ``k`` is the model's own trace up to that step: the chat prompt
(``lm/chat.py``: the template applied to the problem, with the generation prompt), then
the response's tokens before the step; the step's tokens follow (``step_tokens``). The
response's tokens are the ones the model wrote where the data set keeps them (our generated
traces), else the tokenisation of ``separator.join(steps)``; so step 0 follows the generation
prompt directly and later steps follow the separator's tokens as the model writes them
(a prompt that ends in ``"\\n\\n"`` is one token on SmolLM2, where the model writes two).

``prepare.reconstruction: original`` is the original notebook's rule instead: the chat prompt
+ ``"\\n\\n".join(steps[:k]) + "\\n\\n"`` and the step, each tokenised alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import StageError, check
from steerpipe.lm.chat import chat_prompt, chat_prompt_ids, encode

Kind = Literal["conclusion", "verification", "other"]
KINDS = ("conclusion", "verification", "other")


@dataclass(frozen=True)
class PrepareParams:
    """params.yaml ``prepare``: which kinds of step to contrast and how to split them."""

    SECTION: ClassVar[str] = "prepare"
    kinds: list[Kind]  # the positive kind, then the negative
    reconstruction: Literal["trace", "original"]
    seed: int
    min_step_tokens: int
    max_prompt_tokens: int
    test_size: int  # held-out examples of the negative kind: the sweep's and steer's prompts
    positive_test_size: int  # of the positive kind: no stage reads them; 0 gives them to the vector
    min_stability: float | None  # keep steps of stability.kinds at least this stable (None: all)

    def n_test(self, kind: str) -> int:
        """How many of ``kind``'s examples are held out (the first, in the drawn order)."""
        return self.positive_test_size if kind == self.kinds[0] else self.test_size

    def __post_init__(self) -> None:
        check(
            len(self.kinds) == 2 and len(set(self.kinds)) == 2,
            "prepare.kinds",
            f"two different kinds of {KINDS}, got {self.kinds}",
        )
        check(self.min_step_tokens >= 1, "prepare.min_step_tokens", "at least 1")
        check(self.max_prompt_tokens >= 1, "prepare.max_prompt_tokens", "at least 1")
        check(self.test_size >= 1, "prepare.test_size", f"at least 1, got {self.test_size}")
        check(self.positive_test_size >= 0, "prepare.positive_test_size", "at least 0")
        check(
            self.min_stability is None or 0 <= self.min_stability <= 1,
            "prepare.min_stability",
            "null or a share from 0 to 1",
        )


def original_prompt(tokenizer: Tokenizer, problem: str, steps: list[str], k: int) -> str:
    """The original notebook's prompt of step ``k`` (``util.reconstruct_prompt``)."""
    return chat_prompt(tokenizer, problem) + "\n\n".join(steps[:k]) + "\n\n"


def step_spans(text: str, steps: list[str]) -> list[tuple[int, int]]:
    """Where each step lies in the response text: (start, end) characters, in order."""
    spans, pos = [], 0
    for k, step in enumerate(steps):
        start = text.find(step, pos)
        if start < 0:
            where = f" after step {k - 1}" if k else ""
            raise StageError(f"step {k} is not in the trace's text{where}")
        spans.append((start, start + len(step)))
        pos = start + len(step)
    return spans


def _last(ok: Callable[[int], bool], n: int) -> int:
    """The largest ``t`` in 0..n with ``ok(t)``, for ``ok`` true up to a point, then false."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def step_tokens(
    tokenizer: Tokenizer, row: dict[str, Any], k: int, *, separator: str, reconstruction: str
) -> tuple[list[int], list[int]]:
    """(prompt ids, step ids) of step ``k`` of a data-set row; see the module's docstring.

    With ``trace``, prompt + step is a prefix of the trace's tokens: the prompt holds the
    tokens that end before the step, the step the tokens from there to the one that covers
    its last character (a token that straddles a boundary goes to the step).
    """
    steps = row["steps"]
    if reconstruction == "original":
        prompt = original_prompt(tokenizer, row["problem"], steps, k)
        return encode(tokenizer, prompt), encode(tokenizer, steps[k])

    ids = row.get("response_ids")
    if not ids:
        ids = encode(tokenizer, separator.join(steps))
    prefixes: dict[int, str] = {}

    def decoded(t: int) -> str:
        if t not in prefixes:
            prefixes[t] = str(tokenizer.decode(ids[:t], skip_special_tokens=True))
        return prefixes[t]

    text = decoded(len(ids))
    start, end = step_spans(text, steps)[k]
    # A prefix that ends inside a character decodes to a replacement character, which is not
    # a prefix of the text; the search may then stop early, and the step takes a token more.
    before = _last(lambda t: len(decoded(t)) <= start and text.startswith(decoded(t)), len(ids))
    through = 1 + _last(lambda t: len(decoded(t)) < end, len(ids) - 1)
    head = chat_prompt_ids(tokenizer, row["problem"])
    return head + ids[:before], ids[before:through]


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
    separator: str,
    reconstruction: str,
    seed: int,
    min_step_tokens: int,
    max_prompt_tokens: int,
    allowed: set[tuple[int, int]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One step of ``kind`` per problem, drawn with a seeded generator, then filtered; and how
    many drawn steps each filter dropped (``min_step_tokens``, ``max_prompt_tokens``; a step
    may fail both). With ``allowed``, the (row, step) pairs stable enough, the draw is among
    a problem's allowed steps only (``min_stability``: problems left without one).

    Problems are visited in a seeded shuffled order (the original shuffled with seed 42 and
    drew the step unseeded). Each example keeps the token ids of its prompt and of its step.
    """
    rng = random.Random(f"{seed}/{kind}")
    order = list(range(len(rows)))
    rng.shuffle(order)
    examples = []
    dropped = {"min_step_tokens": 0, "max_prompt_tokens": 0}
    if allowed is not None:
        dropped["min_stability"] = 0
    for r in order:
        row = rows[r]
        candidates = steps_of_kind(row, kind)
        if candidates and allowed is not None:
            candidates = [k for k in candidates if (r, k) in allowed]
            dropped["min_stability"] += not candidates
        if not candidates:
            continue
        k = rng.choice(candidates)
        try:
            prompt_ids, step_ids = step_tokens(
                tokenizer, row, k, separator=separator, reconstruction=reconstruction
            )
        except StageError as e:  # the tokenizer does not give the steps' text back
            raise StageError(
                f"data set row {r}: {e}; the tokenizer's decoding changes the text, so the "
                "steps cannot be found in the trace's tokens (prepare.reconstruction: original "
                "tokenises each step alone)"
            ) from e
        short, long = len(step_ids) < min_step_tokens, len(prompt_ids) > max_prompt_tokens
        dropped["min_step_tokens"] += short
        dropped["max_prompt_tokens"] += long
        if short or long:
            continue
        examples.append(
            {"kind": kind, "row": r, "step": k, "prompt_ids": prompt_ids, "step_ids": step_ids}
        )
    return examples, dropped


def stable_steps(
    records: list[dict[str, Any]], min_stability: float
) -> dict[str, set[tuple[int, int]]]:
    """Per kind, the (row, step) pairs whose stability is at least ``min_stability``."""
    kept: dict[str, set[tuple[int, int]]] = {}
    for rec in records:
        if rec["stability"] >= min_stability:
            kept.setdefault(rec["kind"], set()).add((rec["row"], rec["step"]))
    return kept


def held_out(
    examples: list[dict[str, Any]], kind: str, n: int | None = None
) -> list[dict[str, Any]]:
    """The first ``n`` (or all) test examples of ``kind``, in the prepared order."""
    chosen = [e for e in examples if e["split"] == "test" and e["kind"] == kind]
    return chosen if n is None else chosen[:n]
