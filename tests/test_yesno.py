"""yesno: the packaged syllogism questions, BoolQ files, disjoint splits, prompts, parsing."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerpipe.config import StageError
from steerpipe.steering.prepare import chat_prompt_ids
from steerpipe.transcoders.yesno import (
    answer_start,
    answer_token_ids,
    load_questions,
    parse_answer,
    prompt_ids,
    render,
    split_questions,
    syllogism_rows,
)

BOOLQ = pa.schema([("question", pa.string()), ("answer", pa.bool_()), ("passage", pa.string())])


def boolq_rows(n: int) -> list[dict]:
    return [
        {
            "question": f"is {i} an even number",
            "answer": i % 2 == 0,
            "passage": f"The number {i} is {'even' if i % 2 == 0 else 'odd'}.",
        }
        for i in range(n)
    ]


def write_boolq(path, rows, schema=BOOLQ) -> str:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return str(path)


def test_syllogism_rows_in_boolq_schema() -> None:
    rows = syllogism_rows(20, seed=3)
    assert len(rows) == 20
    assert all(set(r) == {"question", "passage", "answer"} for r in rows)
    assert all(r["question"].startswith("does it logically follow that ") for r in rows)
    assert {r["answer"] for r in rows} == {True, False}
    assert rows == syllogism_rows(20, seed=3)
    assert rows[:5] == syllogism_rows(5, seed=3)  # item i does not depend on the count


def test_load_boolq_schema_from_local_parquet(tmp_path) -> None:
    path = write_boolq(tmp_path / "validation.parquet", boolq_rows(10))
    rows = load_questions(path, 0, seed=1, split="validation")
    assert sorted(r["id"] for r in rows) == list(range(10))
    by_id = {r.pop("id"): r for r in [dict(r) for r in rows]}
    assert [by_id[i] for i in range(10)] == boolq_rows(10)
    assert [r["id"] for r in rows] != list(range(10))  # shuffled
    assert rows == load_questions(path, 0, seed=1, split="validation")


def test_boolq_file_errors(tmp_path) -> None:
    with pytest.raises(StageError, match="missing column.*passage"):
        rows = [{"question": "q", "answer": True}]
        load_questions(write_boolq(tmp_path / "a.parquet", rows, schema=None), 0, seed=0, split="x")
    with pytest.raises(StageError, match="row 0: 'answer' must be a boolean"):
        rows = [{"question": "q", "answer": "True", "passage": "p"}]
        load_questions(write_boolq(tmp_path / "b.parquet", rows, schema=None), 0, seed=0, split="x")
    with pytest.raises(StageError, match="no such file"):
        load_questions(str(tmp_path / "none.parquet"), 0, seed=0, split="x")


def test_split_is_disjoint_and_the_trace_set_stable() -> None:
    rows = [{"id": i, **r} for i, r in enumerate(boolq_rows(30))]
    rows.insert(5, {**rows[2], "id": 99})  # a duplicate question
    trace, evaluation = split_questions(rows, 8, 10)
    assert len(trace) == 8 and len(evaluation) == 10
    keys = {(r["question"], r["passage"]) for r in trace}
    assert not keys & {(r["question"], r["passage"]) for r in evaluation}
    assert 99 not in {r["id"] for r in trace + evaluation}
    more_trace, more_eval = split_questions(rows, 8, 20)
    assert more_trace == trace and more_eval[:10] == evaluation
    with pytest.raises(StageError, match="30 distinct"):
        split_questions(rows, 20, 11)


def test_balanced_sets_are_half_yes_half_no_in_source_order() -> None:
    answers = [True] * 6 + [False, True, False, True, False, False, True, False, False, False]
    rows = [
        {"id": i, "question": f"q{i}", "passage": "p", "answer": a} for i, a in enumerate(answers)
    ]
    trace, evaluation = split_questions(rows, 4, 5, balanced=True)
    assert [r["id"] for r in trace] == [0, 1, 6, 8]  # the first 2 Yes and the first 2 No
    assert [r["id"] for r in evaluation] == [2, 3, 10, 11, 13]  # 5: 2 Yes and 3 No
    assert sum(r["answer"] for r in evaluation) == 2
    with pytest.raises(StageError, match="questions.n_eval 12 balanced needs 6 Yes and 6 No"):
        split_questions(rows, 4, 12, balanced=True)


def test_balanced_syllogisms_come_out_half_and_half() -> None:
    rows = load_questions("syllogism", 40, seed=3, split="x", balanced=True)
    trace, evaluation = split_questions(rows, 16, 24, balanced=True)
    assert sum(r["answer"] for r in trace) == 8 and sum(r["answer"] for r in evaluation) == 12
    # item i of the task does not depend on how many were asked for: the trace set is the same
    more = load_questions("syllogism", 60, seed=3, split="x", balanced=True)
    assert split_questions(more, 16, 44, balanced=True)[0] == trace


def test_answer_tokens_are_the_first_of_yes_and_no_after_a_space(tokenizer) -> None:
    yes, no = answer_token_ids(tokenizer)
    assert tokenizer.decode([yes]) == " Yes" and tokenizer.decode([no]) == " No"
    assert tokenizer.encode("Answer: Yes", add_special_tokens=False)[-1] == yes


def test_render_and_bad_template() -> None:
    row = {"question": " is it ", "passage": "It is. "}
    assert render("Q: {question}\nP: {passage}\nA:", row) == "Q: is it\nP: It is.\nA:"
    with pytest.raises(StageError, match="only \\{question\\} and \\{passage\\}"):
        render("Q: {question} {answer}", row)


def test_prompt_ids_raw_or_chat(tokenizer) -> None:
    text = "Question: is it\nAnswer:"
    assert prompt_ids(tokenizer, text, chat_template=False) == tokenizer(text).input_ids
    assert prompt_ids(tokenizer, text, chat_template=True) == chat_prompt_ids(tokenizer, text)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (" Yes, it does.", True),
        (" no", False),
        (" No, the answer is Yes.", True),
        ("The answer is: **No**", False),
        (" True. The passage says so.", True),
        ("It does not follow, so false.", False),
        ("\nThe answer is:\nThe answer is:", None),
        (" Nobody knows; yesterday it was noted.", None),
        ("", None),
    ],
)
def test_parse_answer(text: str, parsed: bool | None) -> None:
    assert parse_answer(text) is parsed


@pytest.mark.parametrize(
    ("text", "word"),
    [
        (" Yes, it does.", "Yes"),
        (" No, the answer is Yes. The answer is no", "no"),
        ("It follows, so true.", "true"),
        (" Nobody knows.", None),
    ],
)
def test_answer_start_is_where_the_parsed_word_is(text: str, word: str | None) -> None:
    start = answer_start(text)
    if word is None:
        assert start is None and parse_answer(text) is None
    else:
        assert start is not None and text[start : start + len(word)] == word
        assert parse_answer(text) is parse_answer(text[start:])
