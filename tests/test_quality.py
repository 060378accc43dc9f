"""quality: each measure on texts worked out by hand, and the degenerate rule on the steered
continuations that the rule judge alone counted as concluding."""

from __future__ import annotations

import zlib

import pytest
from tiny import params

from steerpipe.config import StageError
from steerpipe.steering.labels import CONCLUDING, OTHER, VERIFYING, classify_opening
from steerpipe.steering.quality import (
    QualityParams,
    compression,
    distinct,
    judge_quality,
    local_repeats,
    measures,
    reasons,
    repeat_run,
    repeated_ngrams,
)

P = params(QualityParams)

# (text, its opening's category, degenerate?) from the default run's steered samples and by hand
CASES = [
    ("The answer is is is is", CONCLUDING, True),
    ("Answer: 2. Answer is  answer.", CONCLUDING, True),
    ("The answer is: The answer is: The answer", CONCLUDING, True),
    # the plain model restates its answer too (control: "The answer is 2.\n\nThe answer"):
    # not a loop until a whole stretch repeats back to back
    ("The answer is 31. The answer is", CONCLUDING, False),
    ("The answer is 5. The answer is 5. The", CONCLUDING, True),
    ("The answer is: The answer is: 3", CONCLUDING, True),
    ("10% of 1000 = 10% of 1000 = 10 * 10 = 100. Therefore, the answer is 100.", OTHER, False),
    ("Total number of students = Number of boys * Number", OTHER, False),
    ("**1 * 1 = 1**", OTHER, False),
    (" answer would is is is is answer for answer is", OTHER, True),
    ("Therefore, the answer is 42.", CONCLUDING, False),
    ("Let me double-check: 12 + 30 = 42, which matches the total of 42 apples.", VERIFYING, False),
    ("John has 5 apples and buys 3 more, so he has 5 + 3 = 8 apples.", OTHER, False),
    ("The answer is 212, which is", CONCLUDING, False),
]


@pytest.mark.parametrize(("text", "category", "degenerate"), CASES)
def test_hand_written_continuations_are_classified_as_expected(
    text: str, category: int, degenerate: bool
) -> None:
    assert classify_opening(text) == category
    judged = judge_quality(text, None, P)
    assert judged["degenerate"] is degenerate, judged


def test_repeat_run_counts_the_words_that_copy_the_stretch_before_them() -> None:
    assert repeat_run(["the", "answer", "is", "is", "is", "is"]) == 3
    assert repeat_run(["the", "answer", "is", "the", "answer", "is", "the", "answer"]) == 5
    assert repeat_run(["a", "b", "a", "b"]) == 2
    assert repeat_run(["it", "is", "it"]) == 0  # "it is" never copied whole
    assert repeat_run(["the", "the", "cat"]) == 1
    assert repeat_run([]) == 0
    # arithmetic repeats numbers, not words: "100% of 100% = 100% of 100%"
    assert repeat_run(["100", "of", "100", "100", "of", "100"]) == 0
    assert repeat_run(["1", "1", "1", "1"]) == 0
    assert repeat_run(["the", "answer", "is", "the", "answer", "is", "3"]) == 3


def test_local_repeats_looks_window_words_back() -> None:
    words = ["answer", "answer", "is", "answer"]
    assert local_repeats(words, 4) == 2 / 4
    assert local_repeats(words, 1) == 1 / 4  # only the second "answer" is right after one
    assert local_repeats(["a", "b", "c", "d", "e", "a"], 4) == 0.0  # "a" is 5 words back
    assert local_repeats(["a", "b", "c", "d", "e", "a"], 5) == 1 / 6
    assert local_repeats([], 4) == 0.0


def test_numbers_are_not_local_repeats() -> None:
    # "3 + 3 = 6" is arithmetic, not a loop: the window reads letter words only
    assert measures("So 3 + 3 = 6 apples.", 4)["local_repeats"] == 0.0


def test_repeated_ngrams_and_distinct_n() -> None:
    words = ["a", "b", "c", "a", "b", "c", "a"]  # trigrams abc bca cab abc bca: 2 of 5 seen before
    assert repeated_ngrams(words, 3) == pytest.approx(2 / 5)
    assert distinct(words, 2) == pytest.approx(3 / 6)  # ab bc ca ab bc ca
    assert distinct(["one"], 2) == 1.0 and repeated_ngrams(["one"], 3) == 0.0


def test_compression_is_bytes_over_zlib_bytes() -> None:
    text = "The answer is " * 30
    assert compression(text) == len(text.encode()) / len(zlib.compress(text.encode(), 9))
    assert compression(text) > 10 and compression("") == 0.0


def test_compression_judges_only_long_texts_and_nll_only_when_known() -> None:
    long_loop = "The answer is 5. " * 20  # 340 bytes of one sentence
    m = measures(long_loop, P.window)
    assert "compression" in reasons(m, P) and "repeated_3grams" in reasons(m, P)
    short = measures("Answer answer", P.window) | {"text_bytes": 10, "compression": 99.0}
    assert "compression" not in reasons(short, P)
    fluent = "Therefore, the answer is 42."
    assert judge_quality(fluent, P.max_nll + 0.1, P)["degenerate_reasons"] == "nll"
    assert judge_quality(fluent, P.max_nll, P)["degenerate"] is False
    assert judge_quality(fluent, None, P)["nll"] is None


def test_thresholds_are_checked() -> None:
    with pytest.raises(StageError, match="quality.max_local_repeats"):
        params(QualityParams, max_local_repeats=1.5)
    with pytest.raises(StageError, match="quality.window"):
        params(QualityParams, window=0)
