"""The rule-based labeller: which text opens a conclusion, which a verification.

The patterns live here and only here. They label reasoning steps for the default data set
(``steps``) and classify continuations in the rule-based judge (``judge``), in the seed's
categories: 1 concluding, 2 verifying, 3 other. Patterns look at the opening of the text, the
way the original judge prompt describes the categories ("the output should start with ...").
"""

from __future__ import annotations

import re

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
_LEADING = re.compile(r"^[\s\"'*#>\-\u2013\u2014.]*")


def opening(text: str) -> str:
    """The text without leading whitespace, quotes or markdown bullets."""
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


def label_steps(steps: list[str]) -> tuple[list[int], list[int]]:
    """(verification_steps, conclusion_steps): the indices of steps of each kind."""
    verification, conclusion = [], []
    for i, step in enumerate(steps):
        category = classify_opening(step)
        if category == VERIFYING:
            verification.append(i)
        elif category == CONCLUDING:
            conclusion.append(i)
    return verification, conclusion
