"""solutions: which problems, solving them (batched = alone, a zero vector = control), scoring."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tiny import params
from transformers import PreTrainedModel
from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import StageError
from steerpipe.lm.hooks import Steer
from steerpipe.lm.offsets import tokens_before
from steerpipe.steering.solutions import (
    Condition,
    SolveParams,
    checker,
    load_problems,
    score,
    solve,
    step_starts,
)


def problem_params(**changes: object):  # type: ignore[no-untyped-def]
    if changes.get("source", "gym") != "gym":
        changes.setdefault("config", None)  # the default's reasoning-gym settings
    return dataclasses.replace(params(SolveParams).problems, **changes)


def writing(**changes: object):  # type: ignore[no-untyped-def]
    return dataclasses.replace(params(SolveParams).generation, **changes)


def test_gym_problems_leave_out_what_the_steps_data_set_has() -> None:
    p = problem_params(n=5, seed=43)
    first = load_problems(p, seen=[])
    assert [r["index"] for r in first] == [0, 1, 2, 3, 4]
    seen = ["Solve the problem.\n\nProblem: " + first[2]["problem"]]  # as steps keeps it
    again = load_problems(p, seen=seen)
    assert [r["index"] for r in again] == [0, 1, 3, 4, 5]
    entry = json.loads(again[0]["entry"])
    assert entry["question"] == again[0]["problem"] and entry["answer"] == again[0]["answer"]


def test_a_gym_tasks_settings_reach_reasoning_gym() -> None:
    # products of one digit by one digit: every question multiplies two numbers below 10
    p = problem_params(task="products", config={"min_digits": 1, "max_digits": 1}, n=8)
    for row in load_problems(p, seen=[]):
        a, b = (int(x) for x in re.findall(r"(-?\d+) \* (-?\d+)", row["problem"])[0])
        assert abs(a) < 10 and abs(b) < 10 and int(row["answer"]) == a * b
    # every problem a new one: 1-digit products repeat (100 of them), and repeats are left out
    many = load_problems(dataclasses.replace(p, n=90), seen=[])
    assert len({r["problem"] for r in many}) == 90
    assert [r["index"] for r in many] == sorted(r["index"] for r in many)
    with pytest.raises(StageError, match="gives only 100 distinct problems"):
        load_problems(dataclasses.replace(p, n=101), seen=[])
    with pytest.raises(StageError, match="with config \\{'no_such_setting': 1\\}"):
        load_problems(problem_params(task="products", config={"no_such_setting": 1}), seen=[])
    with pytest.raises(StageError, match="config must be null or empty unless source"):
        problem_params(source="x.parquet", config={"min_digits": 1})


def test_bad_problem_params_are_named(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="solve.problems.task 'no_such_task'"):
        load_problems(problem_params(task="no_such_task"), seen=[])
    with pytest.raises(StageError, match="'all' needs a finite data set"):
        load_problems(problem_params(n="all"), seen=[])
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"problem": ["1+1?", "2+2?"], "answer": ["2", " "]}), path)
    with pytest.raises(StageError, match="solve.problems.source row 1: no answer in 'answer'"):
        load_problems(problem_params(source=str(path), n="all"), seen=[])
    pq.write_table(pa.table({"question": ["1+1?"], "answer": ["2"]}), path)
    with pytest.raises(StageError, match="missing column"):
        load_problems(problem_params(source=str(path), n="all"), seen=[])


def test_a_local_file_is_shuffled_by_seed_and_the_seen_left_out(tmp_path: Path) -> None:
    path = tmp_path / "math.parquet"
    problems = [f"What is {k} + {k}?" for k in range(10)]
    answers = [f"#### {2 * k}" for k in range(10)]
    pq.write_table(pa.table({"question": problems, "answer": answers}), path)
    p = problem_params(source=str(path), problem_column="question", n=4, seed=1)
    chosen = load_problems(p, seen=[problems[0], problems[5]])
    assert len(chosen) == 4 and [r["index"] for r in chosen] == sorted(r["index"] for r in chosen)
    assert not {0, 5} & {r["index"] for r in chosen}
    assert chosen == load_problems(p, seen=[problems[0], problems[5]])  # seeded
    assert chosen != load_problems(dataclasses.replace(p, seed=2), seen=[problems[0], problems[5]])
    with pytest.raises(StageError, match="solve.problems.n 9: .* has 8 problems"):
        load_problems(dataclasses.replace(p, n=9), seen=[problems[0], problems[5]])
    right = checker(str(path), "unused")
    assert right("8", chosen[0] | {"answer": "#### 8"}) and not right("9", {"answer": "#### 8"})


PROBLEMS = [
    {"index": 3, "problem": "What is 2 + 3?", "answer": "5", "entry": ""},
    {"index": 7, "problem": "A farmer has 12 cows and buys 30 more. How many?", "answer": "42"},
]


def test_batched_equals_alone_and_a_zero_vector_is_control(
    tiny_model: PreTrainedModel, tokenizer: Tokenizer
) -> None:
    p = writing(n_samples=3, max_new_tokens=8, batch_size=6)
    control = solve(tiny_model, tokenizer, PROBLEMS, p, [Condition({"condition": "c"})])
    assert [(r["problem"], r["sample"]) for r in control] == [(3, 0), (3, 1), (3, 2), (7, 0)] + [
        (7, 1),
        (7, 2),
    ]
    assert len({tuple(r["ids"]) for r in control}) > 1  # the samples differ
    assert all(r["n_tokens"] == len(r["ids"]) <= 8 for r in control)
    alone = solve(
        tiny_model, tokenizer, PROBLEMS, dataclasses.replace(p, batch_size=1), [Condition({})]
    )
    assert [r["ids"] for r in alone] == [r["ids"] for r in control]
    zero = Steer(1, torch.zeros(tiny_model.config.hidden_size))
    steered = solve(tiny_model, tokenizer, PROBLEMS, p, [Condition({"condition": "z"}, zero)])
    assert [r["ids"] for r in steered] == [r["ids"] for r in control]  # paired noise
    push = Steer(1, 50 * torch.ones(tiny_model.config.hidden_size))
    pushed = solve(tiny_model, tokenizer, PROBLEMS, p, [Condition({}, push)])
    assert [r["ids"] for r in pushed] != [r["ids"] for r in control]


def test_conditions_solved_together_equal_each_solved_alone(
    tiny_model: PreTrainedModel, tokenizer: Tokenizer
) -> None:
    """One generate call for every condition (batches mix them) changes no token or pairing,
    and no NLL beyond its 4th-place rounding: each condition's records equal that condition
    solved on its own."""
    p = writing(n_samples=2, max_new_tokens=8, batch_size=5)
    d = tiny_model.config.hidden_size
    conditions = [
        Condition({"condition": "control"}),
        Condition({"condition": "instruction"}, ask="Be brief."),
        Condition({"condition": "up"}, Steer(1, 50 * torch.ones(d))),
        Condition({"condition": "down"}, Steer(2, -50 * torch.ones(d))),
    ]
    together = solve(tiny_model, tokenizer, PROBLEMS, p, conditions)
    assert [r["condition"] for r in together] == [
        c.fields["condition"] for c in conditions for _ in range(4)
    ]
    apart = [r for c in conditions for r in solve(tiny_model, tokenizer, PROBLEMS, p, [c])]
    for mixed, single in zip(together, apart, strict=True):
        assert mixed["ids"] == single["ids"] and mixed["text"] == single["text"]
        assert mixed["nll"] == pytest.approx(single["nll"], abs=1e-4)
    assert [r["nll"] is not None for r in together] == [r["n_tokens"] > 0 for r in together]
    by = {
        c.fields["condition"]: [r for r in together if r["condition"] == c.fields["condition"]]
        for c in conditions
    }
    assert [r["ids"] for r in by["up"]] != [r["ids"] for r in by["control"]]
    assert [r["ids"] for r in by["down"]] != [r["ids"] for r in by["control"]]
    # the request changes the prompt: the plain model scores the same draws otherwise
    assert [r["nll"] for r in by["instruction"]] != [r["nll"] for r in by["control"]]


def test_a_token_limit_past_the_context_names_the_parameter_and_problem(
    tiny_model: PreTrainedModel, tokenizer: Tokenizer
) -> None:
    p = writing(max_new_tokens=tiny_model.config.max_position_embeddings)
    with pytest.raises(StageError, match="solve.generation.max_new_tokens 1024: problem 3's"):
        solve(tiny_model, tokenizer, PROBLEMS, p, [Condition({})])


def test_step_starts_are_lines_and_sentences() -> None:
    text = "We add. So 2 + 3 = 5.\n\nLet me check: 5.  Therefore, the answer is 5."
    starts = step_starts(text)
    assert [text[k:][:6] for k in starts] == ["We add", "So 2 +", "Let me", "Theref"]


def test_score_on_a_hand_made_solution(tokenizer: Tokenizer) -> None:
    text = "We add 2 and 3. Wait, let me verify: 2 + 3 = 5.\nSo the answer is 5."
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    assert tokenizer.decode(ids) == text
    right = checker("gym", "gsm_symbolic")
    row = {"entry": json.dumps({"question": "?", "answer": "5", "metadata": {}})}
    m = score({"text": text, "ids": ids}, row, tokenizer, right=right)
    before = text.index("So the answer")
    assert m["answer"] == "5" and m["correct"] is True
    assert m["verification_steps"] == 1 and m["steps"] == 3
    assert m["conclusion_tokens"] == tokens_before(tokenizer, ids, text, before)
    assert tokenizer.decode(ids[: m["conclusion_tokens"]]) == text[:before]
    wrong = score({"text": "I think it is 6", "ids": [1]}, row, tokenizer, right=right)
    assert wrong["correct"] is False and wrong["conclusion_tokens"] is None
    none = score({"text": "no idea", "ids": [1]}, row, tokenizer, right=right)
    assert none["answer"] is None and none["correct"] is False
