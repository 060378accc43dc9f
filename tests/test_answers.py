"""answers: extraction from hand-written solutions, GSM8K's reference form, and the verifiers.

The checkers are the field's: reasoning-gym's ``score_answer`` of gsm_symbolic
(reasoning_gym/arithmetic/gsm_symbolic/gsm_symbolic.py: the first number of the answer against
the entry's, as floats) and math-verify's ``parse`` / ``verify`` (math_verify/grader.py).
"""

from __future__ import annotations

import json

import pytest

from steerpipe.steering.answers import (
    boxed,
    extract_answer,
    gym_checker,
    last_number,
    math_equal,
    reference_answer,
)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        # boxed wins over everything, the last one, braces balanced
        (
            "So x = 3, and \\boxed{2} was wrong; the answer is \\boxed{\\frac{1}{2}}.",
            "\\frac{1}{2}",
        ),
        ("The answer is 7, I think. Final: \\boxed{8}", "8"),
        # the last final-answer phrase, to the end of its sentence or line
        ("The answer is 12. Let me double-check. Therefore, the answer is 14.", "14"),
        ("Step 1: 3 + 4 = 7\n\nFinal answer: 7 apples\nThanks", "7"),
        # words around one number, or an equation ending in one: the number
        ("Let me double-check: 6 * 8 = 48. So, the answer is indeed 48.", "48"),
        ("Here's the final answer:\n\n8 * 3 = 24\n\nThis is the last paragraph.", "24"),
        ("The final answer is about $1,250 dollars.", "1,250"),
        ("The answer is 6 * 8, which is 48.", "48"),
        ('The answer is "18"', "18"),
        ('Say it: the answer is "35." Done', "35"),
        ("The answer is 8 * 8.", "8 * 8"),  # not worked out: not a number
        # not a bare number: kept as it is (math-verify reads it)
        ("The answer is 5\\pi.", "5\\pi"),
        ("The answer is (3, 4).", "(3, 4)"),
        # a phrase that gives nothing (an echo of the instruction) gives way to an earlier one
        ('The final answer is 21. Let me end with "Therefore, the answer is".', "21"),
        ("**Answer:** 42", "42"),
        ("the final answer is $\\boxed{4}$", "4"),
        ("Therefore, the answer is 3.5.", "3.5"),
        # no phrase: the last number, thousands and sign kept
        ("First 2 then 5, so we get $1,250 in total", "1,250"),
        ("it drops to -3 degrees", "-3"),
        ("1/2 of it", "1/2"),
    ],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "text",
    ["", "I do not know.", "I need to answer this question first", "\\boxed{unclosed"],
)
def test_unreadable_solutions_are_unparsable_not_errors(text: str) -> None:
    assert extract_answer(text) is None


def test_boxed_and_last_number_alone() -> None:
    assert boxed("\\boxed{\\sqrt{2}} and \\fbox{3}") == "3"
    assert boxed("no box") is None
    assert last_number("12, 13,") == "13"
    assert last_number("none") is None


def test_reference_answer_reads_gsm8ks_final_line() -> None:
    assert reference_answer("She has 3 + 4 = <<3+4=7>>7.\n#### 7") == "7"
    assert reference_answer(" \\frac{14}{3} ") == "\\frac{14}{3}"


@pytest.mark.parametrize(
    ("reference", "answer", "same"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{14}{3}", "\\dfrac{14}{3}", True),
        ("7", "7.0", True),
        ("7", "8", False),
        ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", True),
        ("x^2", "y^2", False),
    ],
)
def test_math_equal_is_math_verify(reference: str, answer: str, same: bool) -> None:
    assert math_equal(reference, answer) is same


def test_gym_checker_is_reasoning_gyms_own_score() -> None:
    import reasoning_gym

    entry = reasoning_gym.create_dataset("gsm_symbolic", size=1, seed=3)[0]
    right = gym_checker("gsm_symbolic")
    as_json = json.dumps(entry, default=str)
    assert right(entry["answer"], as_json)
    assert right(f"{entry['answer']} dollars", as_json)  # its first number is read
    assert not right(str(float(entry["answer"]) + 1), as_json)
