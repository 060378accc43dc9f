"""baselines: the prefill baseline's opener and the baselines the steer stage asks for."""

from __future__ import annotations

import dataclasses

import pytest
from tiny import params

from steerpipe.config import StageError
from steerpipe.lm.chat import ask_ids
from steerpipe.steering.baselines import baseline_conditions, baselines, opener
from steerpipe.steering.steer import SteerParams


def example(kind: str, split: str, step_ids: list[int]) -> dict:
    return {
        "kind": kind,
        "split": split,
        "row": 0,
        "step": 0,
        "prompt_ids": [1],
        "step_ids": step_ids,
    }


EXAMPLES = [
    example("conclusion", "train", [5, 6, 7, 8]),
    example("conclusion", "train", [9, 6, 7]),
    example("conclusion", "train", [5, 6, 1]),
    example("conclusion", "test", [9, 6, 2]),  # held out: not counted
    example("conclusion", "test", [9, 6, 3]),
    example("other", "train", [9, 6, 4]),  # another kind: not counted
    example("other", "train", [9, 6, 5]),
    example("conclusion", "train", [5]),  # too short for 2 tokens
]


def test_the_opener_is_the_most_frequent_opening_of_the_kinds_training_steps() -> None:
    assert opener(EXAMPLES, "conclusion", 2) == [5, 6]  # 2 of 3 against [9, 6]'s 1
    assert opener(EXAMPLES, "conclusion", 3) == [5, 6, 7]  # a tie goes to the one met first
    assert opener(EXAMPLES, "other", 1) == [9]
    with pytest.raises(StageError, match="no conclusion training step has 5 tokens"):
        opener(EXAMPLES, "conclusion", 5)


def test_the_steer_section_chooses_the_baselines(tokenizer) -> None:
    p = params(SteerParams)
    both = baselines(p, tokenizer, EXAMPLES, "conclusion")
    assert list(both) == ["instruction", "prefill"]
    assert both["instruction"].ask == tuple(ask_ids(tokenizer, p.instruction))
    assert both["instruction"].prefill == ()
    assert both["prefill"] == type(both["prefill"])(prefill=(5, 6, 7))  # prefill_tokens: 3
    none = dataclasses.replace(p, instruction=None, prefill_tokens=0)
    assert baselines(none, tokenizer, EXAMPLES, "conclusion") == {}
    cell = {"layer": 3, "position": 1, "coefficient": 0.5, "scale": "absolute"}
    [(fields, how)] = baseline_conditions(cell, {"prefill": both["prefill"]})
    assert fields == cell | {"condition": "prefill", "coefficient": 0.0, "vector_norm": 0.0}
    assert how is both["prefill"]


def test_an_empty_instruction_is_refused() -> None:
    with pytest.raises(StageError, match="steer.instruction"):
        params(SteerParams, instruction="  ")
