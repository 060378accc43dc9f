"""judge: the rule judge's categories, the backend switch, the original prompt kept intact."""

from __future__ import annotations

import pytest
from tiny import params

from steerpipe.config import StageError
from steerpipe.steering.judge import (
    ORIGINAL_USER_PROMPT,
    ClaudeJudge,
    JudgeParams,
    RuleJudge,
    agreement,
    make_judge,
)


def test_rule_judge_categories() -> None:
    texts = ["Therefore the answer is 4", "Wait, let me double-check", "We multiply 3 by 4"]
    assert RuleJudge().classify(texts) == [1, 2, 3]


def test_make_judge(tmp_path) -> None:
    assert make_judge(params(JudgeParams, backend="rule")).name == "rule"
    claude = make_judge(params(JudgeParams, backend="anthropic", model="m", store=str(tmp_path)))
    assert isinstance(claude, ClaudeJudge) and claude.params("x")["model"] == "m"


def test_user_prompt_file(tmp_path) -> None:
    (tmp_path / "p.txt").write_text("Classify: {completion}")
    prompt_file = str(tmp_path / "p.txt")
    claude = make_judge(params(JudgeParams, backend="anthropic", user_prompt_file=prompt_file))
    assert isinstance(claude, ClaudeJudge)
    assert claude.params("abc")["messages"][0]["content"][0]["text"] == "Classify: abc"
    (tmp_path / "bad.txt").write_text("no placeholder")
    with pytest.raises(StageError, match="completion"):
        make_judge(
            params(JudgeParams, backend="anthropic", user_prompt_file=str(tmp_path / "bad.txt"))
        )
    # a missing file, or one that is not text: one line naming the parameter and the file
    (tmp_path / "prompt.bin").write_bytes(b"\xff\xfe\x00binary")
    for name, want in (("none.txt", "no such file"), ("prompt.bin", "not a readable text file")):
        path = str(tmp_path / name)
        with pytest.raises(StageError) as info:
            make_judge(params(JudgeParams, backend="anthropic", user_prompt_file=path))
        assert str(info.value).startswith(f"judge.user_prompt_file {path!r}: {want}")
        assert "\n" not in str(info.value)


def test_original_prompt_is_verbatim() -> None:
    assert ORIGINAL_USER_PROMPT.count("{completion}") == 1
    assert "which reasons step by step by step" in ORIGINAL_USER_PROMPT  # sic, as in the seed
    assert ORIGINAL_USER_PROMPT.startswith("\n        Attached to this prompt")
    assert ORIGINAL_USER_PROMPT.endswith("{completion}\n        ")


def test_agreement_with_the_rule_judge() -> None:
    ours = [1, 1, 3, None, 2, 3]
    rule = [1, 3, 3, 1, 2, None]
    got = agreement(ours, rule)
    assert got["samples"] == 4  # the pairs where both judged
    assert got["confusion"]["concluding"] == {"concluding": 1, "verifying": 0, "other": 1}
    assert (
        got["confusion"]["other"]["other"] == 1 and got["confusion"]["verifying"]["verifying"] == 1
    )
    # p_o = 3/4; p_e = (2/4)(1/4) + (1/4)(1/4) + (1/4)(2/4) = 5/16
    assert got["kappa"] == pytest.approx((3 / 4 - 5 / 16) / (1 - 5 / 16))
    assert agreement([3, 3], [3, 3])["kappa"] is None  # one category only: kappa undefined
    assert agreement([None], [1]) == {
        "samples": 0,
        "kappa": None,
        "confusion": {
            a: {b: 0 for b in ("concluding", "verifying", "other")}
            for a in ("concluding", "verifying", "other")
        },
    }
