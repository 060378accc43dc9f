"""Final answers of full solutions: what a solution answers, and whether that is right.

``extract_answer(text)`` reads the answer a solution gives, trying in this order:

1. the last ``\\boxed{...}`` (braces balanced), as MATH solutions and R1-style models write it;
2. the last final-answer phrase ("the final answer is X", "the answer is X", "Final answer: X",
   "**Answer:** X") whose X has a letter or digit (a small model echoes its instruction:
   'starts with "Therefore, the answer is".'); X runs to the end of its line or sentence,
   and is read as its number where it is words around one number ("indeed 48", "7 apples")
   or a statement whose last side is one ("8 * 3 = 24", "6 * 8, which is 48"); a bare
   expression ("8 * 8") stays as it is, and so is not a number: it was not worked out;
3. the last number in the text.

It returns None when none of these is there: the solution counts as unparsable, never as an
error. ``reference_answer`` reads a data set's answer (GSM8K keeps its final answer after
``####``). Whether an answer is right is decided by the field's verifiers, not here:
reasoning-gym's own ``score_answer`` for its tasks (``gym_checker``), Hugging Face's
``math-verify`` (a LaTeX/SymPy equivalence) for hub and local sets (``math_equal``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
# "the (final) answer is", "answer is:", "Final answer:", "**Answer:**"; a bare "answer" is not one
_PHRASE = re.compile(
    r"(?:\banswer\s+is\s*:?|\banswer\s*(?:\*\*)?\s*:)\s*(?:\*\*)?[ \t]*(?=\S)",
    re.IGNORECASE,
)
_END = re.compile(r"\n|\.[\"'`]?(?:\s|$)|;")  # a sentence may end inside quotes: 'is "35."'
_NUM = r"(-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?)"
# words around one number, or a statement whose last side is a number ("= 24", "which is 48")
_WORDY_NUMBER = re.compile(rf"(?:[A-Za-z]+\s+)*{_NUM}(?:\s+[A-Za-z]+)*|[^=]*(?:=|\bis\b)\s*{_NUM}")


def boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None
    when there is none or it is not closed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _phrase_answer(text: str) -> str | None:
    """What follows the last final-answer phrase that gives something, to the end of its line
    or sentence, quotes stripped; its number where it is words around one number or a
    statement whose last side is one."""
    for m in reversed(list(_PHRASE.finditer(text))):
        rest = text[m.end() :]
        end = _END.search(rest)
        answer = (rest[: end.start()] if end else rest).strip().strip("*$ \"'`")
        if any(c.isalnum() for c in answer):
            bare = _WORDY_NUMBER.fullmatch(answer)
            if bare:
                return next(g for g in bare.groups() if g is not None).replace("$", "")
            return answer
    return None


def last_number(text: str) -> str | None:
    """The last number (sign, thousands commas, decimals or a fraction kept), without ``$``."""
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace("$", "").rstrip(",") if numbers else None


def extract_answer(text: str) -> str | None:
    """The answer a solution gives (see the module), or None when it gives none readably."""
    found = boxed(text)
    if found:
        return found
    found = _phrase_answer(text)
    if found:
        inner = boxed(found)  # "the final answer is $\\boxed{4}$"
        return inner or found
    return last_number(text)


def reference_answer(answer: str) -> str:
    """A data set's answer as the checker compares it: GSM8K's text after ``####``, else
    the answer itself."""
    return answer.rsplit("####", 1)[1].strip() if "####" in answer else answer.strip()


def math_equal(reference: str, answer: str) -> bool:
    """``math-verify``'s equivalence of two answers (numbers, fractions, LaTeX expressions,
    sets, intervals), both read as the contents of a ``\\boxed{}``."""
    from math_verify import parse, verify

    gold = parse(f"\\boxed{{{reference}}}")
    pred = parse(f"\\boxed{{{answer}}}")
    return bool(gold) and bool(pred) and bool(verify(gold, pred))


def gym_checker(task: str) -> Callable[[str, str], bool]:
    """``(answer, entry_json) -> right?`` by the reasoning-gym task's own ``score_answer``
    (a full score of 1.0), where ``entry_json`` is the task's entry as JSON."""
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(task, size=1, seed=0)

    def check(answer: str, entry_json: str) -> bool:
        entry: dict[str, Any] = json.loads(entry_json)
        return float(dataset.score_answer(answer, entry)) == 1.0

    return check
