"""The rule-based labeller: which text opens a conclusion, which a verification.

The patterns live here and only here. They label reasoning steps for the default data set
(``steps``) and classify continuations in the rule-based judge (``judge``), in the seed's
categories: 1 concluding, 2 verifying, 3 other. Patterns look at the opening of the text, the
way the original judge prompt describes the categories ("the output should start with ...").

Models that write one paragraph per answer put the conclusion at the start of a later line
("1. ...\\n2. Therefore, ...") or sentence ("... = 17. So the answer is 17."). ``find`` says
where in a step a pattern first matches (``opening``, ``line``, ``sentence``); ``label_steps``
labels by the opening only unless asked (``steps.label_mid_step``), and ``count_matches`` gives
the counts per place for the data set's metrics, so that what the opening rule misses shows.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

CONCLUDING = 1
VERIFYING = 2
OTHER = 3

CATEGORIES = {CONCLUDING: "concluding", VERIFYING: "verifying", OTHER: "other"}

# Openings of a verification: the model checks work it has already done.
VERIFICATION_PATTERNS: tuple[str, ...] = (
    r"wait\b",
    r"hold on\b",
    r"hmm\b",
    r"(but |now |first |so |okay,? |ok,? )?"
    r"(let me|let's|let us|i'll|i will|i should|i need to|we should|we need to|we can) (just )?"
    r"(double[- ]?check|re-?check|check|verify|confirm|make sure|re-?examine|re-?evaluate"
    r"|go over|recap|review)",
    r"(but |and |so |now )?(just )?(to )?(double[- ]?check|verify|confirm|make sure|be sure)\b",
    r"(double[- ]?check(ing)?|verif(y|ying|ication)|check(ing)?|sanity check)\s*[:,.]",
    r"(is|does) (this|that) (make sense|correct|right)",
)

# Openings of a conclusion: the model states that it has its final answer.
CONCLUSION_PATTERNS: tuple[str, ...] = (
    r"(so,? |thus,? |hence,? |therefore,? |in conclusion,? |finally,? |overall,? )"
    r"(the (final )?(answer|result|total)|[^.\n]{0,60}\bthe (final )?answer\b)",
    r"(the )?final answer\b",
    r"the answer is\b",
    r"(i think |i'm |i am )?(confident|sure) (that )?(the answer|it is|it's|this is)",
    r"i think i'?m confident",
    r"i (don't|do not) see any (mistakes|errors)",
    r"\*\*(final )?answer",
    r"answer\s*:",
    r"\\boxed",
)

_VERIFICATION = re.compile("|".join(f"(?:{p})" for p in VERIFICATION_PATTERNS), re.IGNORECASE)
_CONCLUSION = re.compile("|".join(f"(?:{p})" for p in CONCLUSION_PATTERNS), re.IGNORECASE)
_MARKUP = r"[\s\"'*#>\-\u2013\u2014.]*"
_NUMBER = r"(?:\d{1,2}[.)]\s+|step\s*\d+\s*[:.)])"  # "2. " or "Step 2:"
_LEADING = re.compile(rf"^{_MARKUP}(?:{_NUMBER}{_MARKUP})?", re.IGNORECASE)
# where a later sentence starts: after . ! or ? and a space, inside a line
_SENTENCE = re.compile(r"(?<=[.!?])[ \t]+(?=\S)")

Where = Literal["opening", "line", "sentence"]
PLACES: tuple[Where, ...] = ("opening", "line", "sentence")
KIND_OF = {CONCLUDING: "conclusion", VERIFYING: "verification"}


def opening(text: str) -> str:
    """The text without leading whitespace, quotes, markdown bullets or a step's number."""
    return _LEADING.sub("", text)


def classify_opening(text: str) -> int:
    """1 if the text opens a conclusion, 2 if it opens a verification, else 3.

    Verification wins when both match at the start, because a check of an answer usually
    mentions that answer ("Let me verify the answer is 12").
    """
    head = opening(text)
    if _VERIFICATION.match(head):
        return VERIFYING
    if _CONCLUSION.match(head):
        return CONCLUDING
    return OTHER


def find(step: str) -> tuple[int, Where | None]:
    """The category of a step and where it first matched: its opening, else the start of a
    later line, else the start of a later sentence; (OTHER, None) when nowhere."""
    category = classify_opening(step)
    if category != OTHER:
        return category, "opening"
    lines = step.split("\n")
    for line in lines[1:]:
        category = classify_opening(line)
        if category != OTHER:
            return category, "line"
    for line in lines:
        for m in _SENTENCE.finditer(line):
            category = classify_opening(line[m.end() :])
            if category != OTHER:
                return category, "sentence"
    return OTHER, None


def label_steps(steps: list[str], *, mid_step: bool = False) -> tuple[list[int], list[int]]:
    """(verification_steps, conclusion_steps): the indices of steps of each kind, by how they
    open, or with ``mid_step`` also by a later line or sentence."""
    verification: list[int] = []
    conclusion: list[int] = []
    for i, step in enumerate(steps):
        category, where = find(step)
        if where is None or (where != "opening" and not mid_step):
            continue
        (verification if category == VERIFYING else conclusion).append(i)
    return verification, conclusion


def count_matches(rows_steps: list[list[str]]) -> dict[str, dict[str, int]]:
    """Per kind, how many steps the patterns match at each place (``find``)."""
    counts: Counter[tuple[str, str]] = Counter()
    for steps in rows_steps:
        for step in steps:
            category, where = find(step)
            if where is not None:
                counts[KIND_OF[category], where] += 1
    return {kind: {w: counts[kind, w] for w in PLACES} for kind in KIND_OF.values()}
