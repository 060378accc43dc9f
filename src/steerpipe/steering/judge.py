"""Judges: classify each continuation as 1 concluding, 2 verifying or 3 other.

One interface, ``Judge.classify(texts) -> list[int | None]`` (None: no usable answer), and
backends chosen by ``make_judge(JudgeParams)`` from params.yaml ``judge``:

- ``rule``: the offline rule-based judge; deterministic, reads the opening of the text with
  the patterns in ``labels``.
- ``anthropic``: Claude through the Message Batches API, as in the original notebook; the
  defaults in params.yaml are the original's settings and ``ORIGINAL_USER_PROMPT`` its prompt
  (``claude/message_batches.py`` does the resumable, cached sending). Each request's
  ``custom_id`` is a hash of everything that decides its answer. With ``judge.fluency`` Claude
  also rates each text's fluency on AxBench's 0/1/2 scale (``FLUENCY_PROMPT``; its own
  ``fluency_prompt_version`` in the cache key), in the same batches; ``classify`` leaves the
  ratings in ``fluency``.

``axbench_score`` combines the two per sample as AxBench does (stanfordnlp/axbench,
``axbench/evaluators/``: the harmonic mean of the concept and fluency scores, 0 if either is
0), the concept scoring 2 when the text concludes and 0 otherwise; ``fluency_agreement`` says
how the rule-based degenerate flag (``quality``) agrees with Claude's rating of 0.
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
from steerpipe.storage import reading

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
    fluency: bool  # anthropic: also rate each text's fluency 0/1/2, in the same batches
    fluency_prompt_version: str  # part of every fluency request's cache key
    fluency_max_tokens: int  # the rating comes after a short explanation


# A fluency rubric on AxBench's 0/1/2 scale, in our words (AxBench's fluency template:
# stanfordnlp/axbench, axbench/evaluators/prompt_templates.py); {completion} is the text.
FLUENCY_PROMPT = """Rate the fluency of the text fragment below. A language model that reasons \
step by step wrote it, and the fragment may stop in the middle of a sentence: that is not a \
fault. Judge only whether it reads as natural, grammatical language, not whether it is correct \
or complete.

0: not fluent: incomprehensible, a word salad, or repetitive (a word or phrase repeated again \
and again).
1: somewhat fluent: readable, with noticeable errors or awkward phrasing.
2: fluent: natural and nearly error-free.

Explain in one or two sentences, then give the rating in exactly this format: "Rating: [[score]]".

[Text Start]
{completion}
[Text End]"""


class Judge(Protocol):
    name: str
    stats: dict[str, Any]
    fluency: list[int | None] | None  # Claude's fluency ratings of the last classify, if asked

    def classify(self, texts: Sequence[str]) -> list[int | None]: ...


class RuleJudge:
    """Offline judge: the category of the text's opening, by the labeller's patterns."""

    name = "rule"

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}
        self.fluency: list[int | None] | None = None

    def classify(self, texts: Sequence[str]) -> list[int | None]:
        self.stats = {"samples": len(texts), "unjudged": 0}
        return [classify_opening(t) for t in texts]


_CATEGORY = re.compile(r"^\W*(?:category\W*)?([123])(?![0-9])", re.IGNORECASE)


def parse_category(answer: str) -> int | None:
    """The category in a judge's answer ("1", " 2\n", "Category 3", "1.", "**2**"), or None."""
    match = _CATEGORY.match(answer.strip())
    return int(match.group(1)) if match else None


_RATING = re.compile(r"Rating:\s*\[\[\s*([012])\s*\]\]", re.IGNORECASE)


def parse_rating(answer: str) -> int | None:
    """The last "Rating: [[n]]" (n in 0, 1, 2) in a fluency answer, or None."""
    found = _RATING.findall(answer)
    return int(found[-1]) if found else None


class ClaudeJudge:
    """Claude through the Message Batches API; answers cached in ``settings.store``."""

    name = "anthropic"

    def __init__(self, settings: JudgeParams) -> None:
        path = settings.user_prompt_file
        user_prompt = ORIGINAL_USER_PROMPT
        if path:
            with reading(path, "text file", key="judge.user_prompt_file"):
                user_prompt = Path(path).read_text()
        if "{completion}" not in user_prompt:
            raise StageError("judge: the user prompt must contain '{completion}'")
        self.settings, self.user_prompt = settings, user_prompt
        self.stats: dict[str, Any] = {}
        self.fluency: list[int | None] | None = None

    def params(
        self, text: str, rubric: Literal["concept", "fluency"] = "concept"
    ) -> dict[str, Any]:
        s = self.settings
        template = self.user_prompt if rubric == "concept" else FLUENCY_PROMPT
        prompt = template.replace("{completion}", text)
        return {
            "model": s.model,
            "max_tokens": s.max_tokens if rubric == "concept" else s.fluency_max_tokens,
            "temperature": s.temperature,
            "system": s.system_prompt,
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        }

    def answers(self, texts: Sequence[str]) -> dict[str, list[str | None]]:
        """The raw answer text for each input (None where none could be had), per rubric: the
        concept's, and the fluency's with ``judge.fluency``; every request in one run."""
        rubrics: list[Literal["concept", "fluency"]] = ["concept"]
        if self.settings.fluency:
            rubrics.append("fluency")
        version = {"concept": self.settings.prompt_version}
        version["fluency"] = self.settings.fluency_prompt_version
        requests: dict[str, dict[str, Any]] = {}
        ids: dict[str, list[str]] = {}
        for rubric in rubrics:
            ids[rubric] = []
            for text in texts:
                params = self.params(text, rubric)
                ids[rubric].append(request_id(params, version[rubric]))
                requests[ids[rubric][-1]] = params
        store, stats = run_batches(requests, self.settings)
        self.stats = {"samples": len(texts), "unique_requests": len(requests), **stats}
        out: dict[str, list[str | None]] = {}
        for name, keys in ids.items():
            records = [store.get(i) for i in keys]
            out[name] = [r["text"] if r and r["status"] == "succeeded" else None for r in records]
        return out

    def classify(self, texts: Sequence[str]) -> list[int | None]:
        answers = self.answers(texts)
        categories = [None if a is None else parse_category(a) for a in answers["concept"]]
        self.stats["unparsed"] = sum(
            a is not None and c is None for a, c in zip(answers["concept"], categories, strict=True)
        )
        self.stats["unjudged"] = sum(c is None for c in categories)
        if "fluency" in answers:
            self.fluency = [None if a is None else parse_rating(a) for a in answers["fluency"]]
            self.stats["fluency_unrated"] = sum(f is None for f in self.fluency)
        return categories


def make_judge(params: JudgeParams) -> Judge:
    """The judge that the ``judge`` section of params.yaml asks for."""
    return RuleJudge() if params.backend == "rule" else ClaudeJudge(params)


def axbench_score(concluding: bool, fluency: int | None) -> float | None:
    """AxBench's per-sample score: the harmonic mean of the concept score (2 when the text
    concludes, else 0) and the fluency rating, 0 when either is 0; None when unrated."""
    if fluency is None:
        return None
    concept = 2 if concluding else 0
    return 0.0 if concept == 0 or fluency == 0 else 2 * concept * fluency / (concept + fluency)


def fluency_agreement(degenerate: Sequence[bool], fluency: Sequence[int | None]) -> dict[str, Any]:
    """How the degenerate rule agrees with Claude's fluency rating: Cohen's kappa of
    degenerate against a rating of 0, and the counts of each rating by the rule's flag."""
    from steerpipe.stats import cohen_kappa

    pairs = [(d, f) for d, f in zip(degenerate, fluency, strict=True) if f is not None]
    table = {
        "degenerate" if d else "not_degenerate": {
            str(k): sum(p == (d, k) for p in pairs) for k in (0, 1, 2)
        }
        for d in (True, False)
    }
    kappa = (
        cohen_kappa([int(d) for d, _ in pairs], [int(f == 0) for _, f in pairs])
        if pairs
        else math.nan
    )
    return {"samples": len(pairs), "kappa": None if math.isnan(kappa) else kappa, "ratings": table}


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
