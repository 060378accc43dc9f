"""Judges: classify each continuation as 1 concluding, 2 verifying or 3 other.

One interface, ``Judge.classify(texts) -> list[int | None]`` (None: no usable answer), and
backends chosen by ``make_judge(JudgeParams)`` from params.yaml ``judge``:

- ``rule``: the offline rule-based judge; deterministic, reads the opening of the text with
  the patterns in ``labels``.
- ``anthropic``: Claude through the Message Batches API, as in the original notebook; the
  defaults in params.yaml are the original's settings and ``ORIGINAL_USER_PROMPT`` its prompt
  (``claude/message_batches.py`` does the resumable, cached sending). Each request's ``custom_id`` is a hash of
  everything that decides its answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from steerpipe.claude.message_batches import ClaudeParams, request_id, run_batches
from steerpipe.config import StageError
from steerpipe.steering.labels import CATEGORIES, classify_opening

# The original notebook's judge prompt, kept verbatim (indentation included) so that the
# Claude backend reproduces the paper's numbers. {completion} is the 10-token continuation.
ORIGINAL_USER_PROMPT = '\n        Attached to this prompt is the output of a language model which reasons step by step by step. The output given to you is the beginning of one of the reasoning steps. Classify the output into one of the following categories.\n\n        1. The model is concluding that it has figured out the final answer. In this case, the output should start with something like "I think I\'m confident" or "Therefore the answer is" or "I don\'t see any mistakes here".\n\n        2. The model is verifying its work. In this case, the output should start with something like "Wait, but let me make sure," or "Let me double-check," or "Wait, to make sure".\n\n        3. The output does not seem to fit into the first two categories, or it is not clear what the model is doing.\n        \n        Do not respond with anything other than the number of the category. Note that the output may not be a complete sentence, because the model was only asked to generate the first 10 tokens.\n        \n        Here is the output of the language model:\n        \n        {completion}\n        '


@dataclass(frozen=True)
class JudgeParams(ClaudeParams):
    """params.yaml ``judge``: the backend, and Claude's settings when it is ``anthropic``."""

    SECTION: ClassVar[str] = "judge"
    backend: Literal["rule", "anthropic"]
    system_prompt: str
    user_prompt_file: str | None  # None: ORIGINAL_USER_PROMPT


class Judge(Protocol):
    name: str
    stats: dict[str, Any]

    def classify(self, texts: Sequence[str]) -> list[int | None]: ...


class RuleJudge:
    """Offline judge: the category of the text's opening, by the labeller's patterns."""

    name = "rule"

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}

    def classify(self, texts: Sequence[str]) -> list[int | None]:
        self.stats = {"samples": len(texts), "unjudged": 0}
        return [classify_opening(t) for t in texts]


_CATEGORY = re.compile(r"^\W*(?:category\W*)?([123])(?![0-9])", re.IGNORECASE)


def parse_category(answer: str) -> int | None:
    """The category in a judge's answer ("1", " 2\n", "Category 3", "1.", "**2**"), or None."""
    match = _CATEGORY.match(answer.strip())
    return int(match.group(1)) if match else None


class ClaudeJudge:
    """Claude through the Message Batches API; answers cached in ``settings.store``."""

    name = "anthropic"

    def __init__(self, settings: JudgeParams) -> None:
        path = settings.user_prompt_file
        user_prompt = Path(path).read_text() if path else ORIGINAL_USER_PROMPT
        if "{completion}" not in user_prompt:
            raise StageError("judge: the user prompt must contain '{completion}'")
        self.settings, self.user_prompt = settings, user_prompt
        self.stats: dict[str, Any] = {}

    def params(self, text: str) -> dict[str, Any]:
        prompt = self.user_prompt.replace("{completion}", text)
        return {
            "model": self.settings.model,
            "max_tokens": self.settings.max_tokens,
            "temperature": self.settings.temperature,
            "system": self.settings.system_prompt,
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        }

    def answers(self, texts: Sequence[str]) -> list[str | None]:
        """The raw answer text for each input (None where none could be had)."""
        requests = {}
        ids = []
        for text in texts:
            params = self.params(text)
            ids.append(request_id(params, self.settings.prompt_version))
            requests[ids[-1]] = params
        store, stats = run_batches(requests, self.settings)
        self.stats = {"samples": len(texts), "unique_requests": len(requests), **stats}
        out: list[str | None] = []
        for i in ids:
            record = store.get(i)
            out.append(record["text"] if record and record["status"] == "succeeded" else None)
        return out

    def classify(self, texts: Sequence[str]) -> list[int | None]:
        answers = self.answers(texts)
        categories = [None if a is None else parse_category(a) for a in answers]
        self.stats["unparsed"] = sum(
            a is not None and c is None for a, c in zip(answers, categories, strict=True)
        )
        self.stats["unjudged"] = sum(c is None for c in categories)
        return categories


def make_judge(params: JudgeParams) -> Judge:
    """The judge that the ``judge`` section of params.yaml asks for."""
    return RuleJudge() if params.backend == "rule" else ClaudeJudge(params)


def agreement(ours: Sequence[int | None], rule: Sequence[int | None]) -> dict[str, Any]:
    """How a judge's categories agree with the rule judge's on the same samples (the free
    second opinion): Cohen's kappa and the confusion counts, over the samples both judged."""
    # imported here: scipy takes a second to import, and the rule judge needs none
    from steerpipe.stats import cohen_kappa

    pairs = [(a, b) for a, b in zip(ours, rule, strict=True) if a is not None and b is not None]
    confusion = {
        CATEGORIES[a]: {CATEGORIES[b]: sum(p == (a, b) for p in pairs) for b in CATEGORIES}
        for a in CATEGORIES
    }
    kappa = cohen_kappa([a for a, _ in pairs], [b for _, b in pairs]) if pairs else math.nan
    # undefined (no pairs, or both judges gave every sample one category): null in the JSON
    return {
        "samples": len(pairs),
        "kappa": None if math.isnan(kappa) else kappa,
        "confusion": confusion,
    }
