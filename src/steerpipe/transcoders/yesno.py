"""Yes/No questions for experiment B: the data set, its prompt styles and answer parsing.

Rows follow BoolQ's schema (``google/boolq``): ``question: str``, ``passage: str``,
``answer: bool``. Sources:

- ``syllogism`` (the offline default): reasoning-gym's packaged syllogism generator. Its two
  premises become the passage and its conclusion the question ("does it logically follow that
  ..."); the answer is whether the conclusion follows.
- a hub id (``google/boolq``) through ``datasets``, or a local Parquet file in BoolQ's schema.

``load_questions`` gives the rows in a seeded order that does not depend on how many are
asked for; ``split_questions`` drops duplicates and takes the first ``n_trace`` for the traces
and the next ``n_eval`` for the evaluation, so the two sets never share a question (the
original evaluated on a subset of the questions that chose its neurons) and asking for more
evaluation questions leaves the trace set, and so the cached traces, as they were.
"""

from __future__ import annotations

import random
import re
from typing import Any

from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import StageError
from steerpipe.lm.chat import chat_prompt_ids
from steerpipe.storage import load_table

FIELDS = ("question", "passage", "answer")
PACKAGED = "syllogism"


def syllogism_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` questions from reasoning-gym's syllogism task, in BoolQ's schema."""
    import reasoning_gym

    rows = []
    for item in reasoning_gym.create_dataset("syllogism", size=n, seed=seed):
        meta = item["metadata"]
        conclusion = str(meta["conclusion"])
        rows.append(
            {
                "question": "does it logically follow that "
                + conclusion[0].lower()
                + conclusion[1:],
                "passage": f"{meta['premise1']}. {meta['premise2']}.",
                "answer": bool(meta["is_valid"]),
            }
        )
    return rows


def load_questions(
    source: str, n: int, *, seed: int, split: str, balanced: bool = False
) -> list[dict[str, Any]]:
    """Rows in a seeded order, each with ``id`` (its index in the source).

    ``syllogism``: ``n`` generated ones (and a few spare, since duplicates are dropped later;
    four times as many with ``balanced``, since about 70% of them are Yes); generated item i
    does not depend on ``n``. A table: all its rows, shuffled by ``seed``.
    """
    if source == PACKAGED:
        rows = syllogism_rows((4 * n if balanced else n + n // 10) + 16, seed)
    else:
        rows = load_table(source, split, FIELDS, "questions.source")
        for r, row in enumerate(rows):
            if not isinstance(row["question"], str) or not isinstance(row["passage"], str):
                raise StageError(f"questions row {r}: 'question' and 'passage' must be strings")
            if not isinstance(row["answer"], bool):
                raise StageError(
                    f"questions row {r}: 'answer' must be a boolean, got {row['answer']!r}"
                )
    rows = [{"id": i, **row} for i, row in enumerate(rows)]
    if source != PACKAGED:
        random.Random(seed).shuffle(rows)
    return rows


def split_questions(
    rows: list[dict[str, Any]], n_trace: int, n_eval: int, *, balanced: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Disjoint (trace, eval): duplicates dropped, the first ``n_trace``, the next ``n_eval``;
    with ``balanced``, each part half Yes and half No (``balance``), so that answering one
    word to everything scores 0.5."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for row in rows:
        key = (row["question"].strip().lower(), row["passage"].strip())
        if key not in seen:
            seen.add(key)
            unique.append(row)
    if n_trace + n_eval > len(unique):
        raise StageError(
            f"questions: {n_trace} trace + {n_eval} evaluation questions asked for, "
            f"but the source has {len(unique)} distinct ones"
        )
    if not balanced:
        return unique[:n_trace], unique[n_trace : n_trace + n_eval]
    trace = balance(unique, n_trace, "n_trace")
    taken = {id(r) for r in trace}
    return trace, balance([r for r in unique if id(r) not in taken], n_eval, "n_eval")


def balance(rows: list[dict[str, Any]], n: int, key: str) -> list[dict[str, Any]]:
    """The first ``n // 2`` Yes rows and the first ``n - n // 2`` No rows, in their order."""
    want = {True: n // 2, False: n - n // 2}
    out = []
    for row in rows:
        if want[row["answer"]] > 0:
            want[row["answer"]] -= 1
            out.append(row)
    if any(want.values()):
        have = {a: sum(r["answer"] is a for r in rows) for a in (True, False)}
        raise StageError(
            f"questions.{key} {n} balanced needs {n // 2} Yes and {n - n // 2} No questions; "
            f"the source has {have[True]} and {have[False]} left (questions.balanced: false "
            "takes them as they come)"
        )
    return out


def render(template: str, row: dict[str, Any]) -> str:
    """A prompt style's template with ``{question}`` and ``{passage}`` filled in."""
    try:
        return template.format(question=row["question"].strip(), passage=row["passage"].strip())
    except (KeyError, IndexError, ValueError) as e:
        raise StageError(
            f"prompt template {template[:40]!r}...: only {{question}} and {{passage}} "
            f"may appear in braces ({e})"
        ) from e


def prompt_ids(tokenizer: Tokenizer, text: str, *, chat_template: bool) -> list[int]:
    """Token ids of a prompt: the raw text (with the tokenizer's BOS, as the original did) or
    the text as one user message under the chat template."""
    if chat_template:
        return chat_prompt_ids(tokenizer, text)
    return list(tokenizer(text).input_ids)


def answer_token_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    """The tokens that start " Yes" and " No" (after "Answer:"), whose log-probabilities the
    answer margin compares."""
    yes = tokenizer.encode(" Yes", add_special_tokens=False)
    no = tokenizer.encode(" No", add_special_tokens=False)
    if not yes or not no or yes[0] == no[0]:
        raise StageError(
            f"the tokenizer gives ' Yes' {yes} and ' No' {no}: no token tells them apart"
        )
    return yes[0], no[0]


_STATED = re.compile(r"answer\s*(?:is|:)\s*\**\s*(yes|no|true|false)\b", re.IGNORECASE)
_WORD = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)


def _answer_word(text: str) -> re.Match[str] | None:
    """The match whose group 1 is the answer word ``parse_answer`` reads."""
    stated = list(_STATED.finditer(text))
    return stated[-1] if stated else _WORD.search(text)


def parse_answer(text: str) -> bool | None:
    """Yes (True), No (False), or None when the text gives neither.

    An explicit "the answer is X" wins (the last one, as models restate); otherwise the first
    yes/no/true/false word. "No, the answer is Yes." is therefore Yes.
    """
    match = _answer_word(text)
    return None if match is None else match.group(1).lower() in ("yes", "true")


def answer_start(text: str) -> int | None:
    """Where the word that ``parse_answer`` reads starts in ``text`` (None: there is none)."""
    match = _answer_word(text)
    return None if match is None else match.start(1)
