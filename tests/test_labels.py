"""labels: the rule-based labeller's patterns, on the seed's own examples and on the shapes
other models write (numbered steps, conclusions inside a paragraph or on a later line)."""

from __future__ import annotations

import pytest

from steerpipe.steering.labels import (
    CONCLUDING,
    OTHER,
    VERIFYING,
    classify_opening,
    count_matches,
    find,
    label_steps,
)


@pytest.mark.parametrize(
    "text",
    [
        "I think I'm confident that the answer is 5.",
        "Therefore the answer is 12.",
        "I don't see any mistakes here.",
        "So, the final answer is 7.",
        "The answer is 16.\n\n",
        "\nThe answer is 3. \nThe",
        "**Final Answer**\n\\boxed{4}",
        "Thus, the total is 42 apples.",
    ],
)
def test_conclusions(text: str) -> None:
    assert classify_opening(text) == CONCLUDING


@pytest.mark.parametrize(
    "text",
    [
        "Wait, but let me make sure,",
        "Let me double-check,",
        "Wait, to make sure",
        "Let me just recap the steps to make sure I",  # from the seed's sweep output
        "But just to make sure I didn't make any",
        "Let me verify the answer is 12.",  # verification wins over the answer it mentions
        "Hmm, is that right?",
        "To double-check her strategy, we need to",
    ],
)
def test_verifications(text: str) -> None:
    assert classify_opening(text) == VERIFYING


@pytest.mark.parametrize(
    "text",
    [
        "First, we find the number of apples.",
        "Adding 3 and 4 gives 7.",
        "Let's solve this step by step.",
        "",
        "The virus can be spread by 17 people. Therefore, the answer is 3.",  # not its opening
    ],
)
def test_other(text: str) -> None:
    assert classify_opening(text) == OTHER


def test_label_steps_gives_indices_per_kind() -> None:
    steps = ["Add 2 and 3.", "Wait, let me check that.", "So the answer is 5.", "Done."]
    assert label_steps(steps) == ([1], [2])


@pytest.mark.parametrize(
    ("text", "category", "where"),
    [
        ("1. Therefore, the answer is 3.", CONCLUDING, "opening"),
        ("**Step 3:** Let me verify this.", VERIFYING, "opening"),
        ("3.5 apples remain.", OTHER, None),  # a number, not a step's number
        ("Add them: 12 + 5 = 17. Therefore, the answer is 17.", CONCLUDING, "sentence"),
        ("1. Add 12 and 5.\n2. Therefore, the answer is 17.", CONCLUDING, "line"),
        ("We get 17.\n**Final Answer**\n\\boxed{17}", CONCLUDING, "line"),
        (
            "We get 17. Let me double-check: 12 + 5 = 17. So the answer is 17.",
            VERIFYING,
            "sentence",
        ),
        ("Add 12 and 5 to get 17.\nThat is the total.", OTHER, None),
    ],
)
def test_find_says_where_a_step_matches(text: str, category: int, where: str | None) -> None:
    assert find(text) == (category, where)


def test_mid_step_labels_only_when_asked() -> None:
    steps = [
        "Add 12 and 5: 17. Therefore, the answer is 17.",
        "Wait, let me check.",
        "We get 4.\nThe answer is 4.",
        "Done.",
    ]
    assert label_steps(steps) == ([1], [])
    assert label_steps(steps, mid_step=True) == ([1], [0, 2])
    counts = count_matches([steps, ["The answer is 5."]])
    assert counts == {
        "conclusion": {"opening": 1, "line": 1, "sentence": 1},
        "verification": {"opening": 1, "line": 0, "sentence": 0},
    }
