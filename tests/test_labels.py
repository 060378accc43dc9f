"""labels: the rule-based labeller's patterns, on the seed's own examples."""

from __future__ import annotations

import pytest

from steerpipe.labels import CONCLUDING, OTHER, VERIFYING, classify_opening, label_steps


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
