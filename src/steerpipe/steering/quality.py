"""Is a generated text fluent, or has steering broken it? Measures of one text, and the
``degenerate`` rule over them (params.yaml ``quality``).

Steering pushed too hard concludes by breaking the text: "The answer is: The answer is: The
answer", "Answer: 2. Answer is  answer.", or loops on "answer is" to the token limit. A judge
of the opening counts those as concluding; the rule below counts them as degenerate, and a
sample is ``clean`` when it concludes and is not degenerate.

Measures of a text (``measures``), over its lower-cased words (``\\w+``; letters only where
said), in the manner of the field's (EasyEdit2's distinct-n; the repeated n-grams and zlib
ratio that caught "Wait, hold on." loops in reasoning-steering work):

- ``repeat_run``: the longest back-to-back repetition, in words: the longest stretch that
  copies the stretch right before it ("is is is" 2; "the answer is the answer is the answer" 5),
  counted where the repeated words are mostly letters (arithmetic repeats numbers).
- ``local_repeats``: the share of letter words that repeat one of the ``window`` letter words
  before them ("answer 2 answer is answer": 2 of 4 with a window of 2). Numbers are left out:
  "3 + 3 = 6" is fine; a window of 2 leaves out what fluent text repeats at a distance
  ("number of boys * number", "the answer is 2. The answer").
- ``repeated_3grams``: the share of word trigrams seen earlier in the text (loops of longer
  period, which a window misses).
- ``distinct_2``: distinct word bigrams over bigrams (1.0 for fewer than two words).
- ``compression``: the text's UTF-8 bytes over its zlib-compressed bytes; only texts of
  ``min_compression_bytes`` or more are judged by it (zlib's header dominates a short text).
- ``nll``: the unsteered model's mean negative log-likelihood of the continuation's tokens given
  its prompt (``lm/scoring.py``; computed where the text is generated). It catches word salad
  that repeats nothing; it cannot be the only measure, because repetition makes text likelier.

A text is degenerate when any measure passes its threshold (``reasons`` says which). How the
thresholds were set, and their rate on unsteered samples: docs/experiment-a.md.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

from steerpipe.config import check

_WORD = re.compile(r"\w+")
_LETTERS = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class QualityParams:
    """params.yaml ``quality``: the thresholds of the degenerate rule (read by the judge and
    the solve report, not by the stages that generate)."""

    SECTION: ClassVar[str] = "quality"
    max_repeat_run: int  # degenerate at this many back-to-back repeated words or more
    window: int  # local_repeats looks this many letter words back
    max_local_repeats: float  # degenerate above this share
    max_repeated_3grams: float  # degenerate above this share
    max_compression: float  # degenerate above this ratio ...
    min_compression_bytes: int  # ... for texts of at least this many bytes
    max_nll: float  # degenerate above this mean NLL (nats per token)

    def __post_init__(self) -> None:
        check(self.max_repeat_run >= 1, "quality.max_repeat_run", "at least 1")
        check(self.window >= 1, "quality.window", "at least 1")
        for key in ("max_local_repeats", "max_repeated_3grams"):
            check(0 <= getattr(self, key) <= 1, f"quality.{key}", "in [0, 1]")
        check(self.max_compression > 0, "quality.max_compression", "positive")
        check(self.max_nll > 0, "quality.max_nll", "positive")


def repeat_run(words: list[str]) -> int:
    """Words in the longest stretch that copies the stretch right before it (any period), where
    the repeated words are mostly words, not numbers: "the answer is: the answer is" is a loop,
    "10% of 100% = 10% of 100%" arithmetic."""
    best = 0
    for period in range(1, len(words) // 2 + 1):
        run = 0
        for i in range(len(words) - period):
            run = run + 1 if words[i] == words[i + period] else 0
            # a whole period has repeated: the stretch copies its predecessor
            if run >= period and _wordy(words[i + 1 - period : i + 1]):
                best = max(best, run)
    return best


def _wordy(unit: list[str]) -> bool:
    letters = sum(bool(_LETTERS.fullmatch(w)) for w in unit)
    return letters > len(unit) - letters


def local_repeats(words: list[str], window: int) -> float:
    """The share of words equal to one of the ``window`` words before them."""
    if not words:
        return 0.0
    hits = sum(w in words[max(0, i - window) : i] for i, w in enumerate(words))
    return hits / len(words)


def repeated_ngrams(words: list[str], n: int) -> float:
    """The share of the text's word n-grams that occurred earlier in it."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def distinct(words: list[str], n: int) -> float:
    """Distinct word n-grams over n-grams (distinct-n); 1.0 when the text has none."""
    return 1 - repeated_ngrams(words, n) if len(words) >= n else 1.0


def compression(text: str) -> float:
    """UTF-8 bytes over zlib-compressed bytes (level 9)."""
    raw = text.encode()
    return len(raw) / len(zlib.compress(raw, 9)) if raw else 0.0


def measures(text: str, window: int) -> dict[str, Any]:
    """Every text measure of the module (all but ``nll``, which needs the model)."""
    words = [w.lower() for w in _WORD.findall(text)]
    letters = [w.lower() for w in _LETTERS.findall(text)]
    return {
        "repeat_run": repeat_run(words),
        "local_repeats": local_repeats(letters, window),
        "repeated_3grams": repeated_ngrams(words, 3),
        "distinct_2": distinct(words, 2),
        "compression": compression(text),
        "text_bytes": len(text.encode()),
    }


def reasons(m: dict[str, Any], p: QualityParams) -> list[str]:
    """The measures of ``m`` (``measures`` and ``nll``, which may be None) past their
    thresholds; a text is degenerate when this is not empty."""
    out = []
    if m["repeat_run"] >= p.max_repeat_run:
        out.append("repeat_run")
    if m["local_repeats"] > p.max_local_repeats:
        out.append("local_repeats")
    if m["repeated_3grams"] > p.max_repeated_3grams:
        out.append("repeated_3grams")
    if m["text_bytes"] >= p.min_compression_bytes and m["compression"] > p.max_compression:
        out.append("compression")
    if m.get("nll") is not None and m["nll"] > p.max_nll:
        out.append("nll")
    return out


def judge_quality(text: str, nll: float | None, p: QualityParams) -> dict[str, Any]:
    """A text's measures, ``degenerate`` and its ``degenerate_reasons`` (comma-separated)."""
    m = {**measures(text, p.window), "nll": nll}
    why = reasons(m, p)
    return {**m, "degenerate": bool(why), "degenerate_reasons": ",".join(why)}
