"""judge: the rule judge's categories, the backend switch, the original prompt kept intact."""

from __future__ import annotations

import pytest

from steerpipe.config import StageError
from steerpipe.judge import ORIGINAL_USER_PROMPT, RuleJudge, make_judge


def test_rule_judge_categories() -> None:
    texts = ["Therefore the answer is 4", "Wait, let me double-check", "We multiply 3 by 4"]
    assert RuleJudge().classify(texts) == [1, 2, 3]


def test_make_judge() -> None:
    assert make_judge("rule").name == "rule"
    with pytest.raises(StageError, match="not available yet"):
        make_judge("anthropic")
    with pytest.raises(StageError, match="judge.backend"):
        make_judge("gpt")


def test_original_prompt_is_verbatim() -> None:
    assert ORIGINAL_USER_PROMPT.count("{completion}") == 1
    assert "which reasons step by step by step" in ORIGINAL_USER_PROMPT  # sic, as in the seed
    assert ORIGINAL_USER_PROMPT.startswith("\n        Attached to this prompt")
    assert ORIGINAL_USER_PROMPT.endswith("{completion}\n        ")
