"""sweep: the best choice (layer, position, coefficient) by each metric and a stated rule, what
``auto`` takes when some parts are given, the steer stage's prompts, and clear errors."""

from __future__ import annotations

import dataclasses

import pytest
from tiny import params

from steerpipe.config import StageError
from steerpipe.steering.sweep import (
    SweepParams,
    best_choice,
    best_pooled_choice,
    best_scored_cell,
    check_cell,
    chosen,
    rates_by_choice,
    steer_prompts,
)


def rows(layer: int, pos: int, coefficient: float, samples: list[tuple[int, bool]]) -> list[dict]:
    """Judged samples: (category, degenerate) each; clean = concluding and not degenerate."""
    return [
        {"layer": layer, "position": pos, "coefficient": coefficient, "category": c}
        | {"degenerate": d, "clean": c == 1 and not d}
        for c, d in samples
    ]


# (5, 1, 2.0) concludes most, by breaking the text; (3, 2, 0.5) concludes cleanly more often
JUDGED = (
    rows(5, 1, 2.0, [(1, True), (1, True), (1, True), (1, False)])
    + rows(3, 2, 0.5, [(1, False), (1, False), (3, False), (3, False)])
    + rows(3, 2, 1.0, [(1, False), (1, True), (1, True), (3, False)])
    + rows(4, 0, 0.5, [(1, False), (1, False), (3, True), (2, False)])
)
SCORES = [
    {"layer": 6, "position": 0, "coefficient": 1.0, "score": 0.5},
    {"layer": 3, "position": 4, "coefficient": 1.0, "score": 0.9},
    {"layer": 3, "position": 1, "coefficient": 1.0, "score": 0.9},
    {"layer": 9, "position": 2, "coefficient": 1.0, "score": -2.0},
]


def test_rates_by_choice_count_each_measure() -> None:
    assert rates_by_choice(JUDGED)[(5, 1, 2.0)] == (4, 4)
    assert rates_by_choice(JUDGED, "clean")[(5, 1, 2.0)] == (1, 4)
    assert rates_by_choice(JUDGED, "degenerate")[(3, 2, 1.0)] == (2, 4)


def test_the_clean_metric_does_not_pick_the_choice_that_breaks_the_text() -> None:
    assert best_choice(JUDGED, "judged") == (5, 1, 2.0)  # 4/4 raw, 3 of them broken
    # (3, 2, 0.5) and (4, 0, 0.5) both 2/4 clean: the lower layer wins the tie
    assert best_choice(JUDGED, "clean") == (3, 2, 0.5)
    with pytest.raises(StageError, match="'auto' needs judged sweep samples"):
        best_choice([], "clean")


def test_a_tie_goes_to_the_cell_with_the_higher_logprob_score() -> None:
    scores = [
        {"layer": 3, "position": 2, "coefficient": 1.0, "score": 0.1},
        {"layer": 4, "position": 0, "coefficient": 1.0, "score": 0.7},
    ]
    assert best_choice(JUDGED, "clean", scores) == (4, 0, 0.5)
    # a cell without a score ranks below every scored one
    assert best_choice(JUDGED, "clean", scores[:1]) == (3, 2, 0.5)
    assert best_choice(JUDGED, "clean", scores[1:]) == (4, 0, 0.5)


def test_best_scored_cell_highest_score_then_lowest_cell() -> None:
    assert best_scored_cell(SCORES) == (3, 1)
    with pytest.raises(StageError, match="sweep.metric: logprob"):
        best_scored_cell([])


def test_auto_parts_follow_the_metric_among_choices_that_agree_with_the_given_ones() -> None:
    p = params(SweepParams, metric="clean", logprob_coefficient=1.5)
    assert chosen("auto", "auto", "auto", p, JUDGED, SCORES) == (3, 2, 0.5)
    # a given coefficient: the best choice at that coefficient
    assert chosen("auto", "auto", 2.0, p, JUDGED, SCORES) == (5, 1, 2.0)
    assert chosen(4, "auto", "auto", p, JUDGED, SCORES) == (4, 0, 0.5)
    # a layer the sweep never sampled: the other parts from the best choice of all
    assert chosen(7, "auto", "auto", p, JUDGED, SCORES) == (7, 2, 0.5)
    raw = dataclasses.replace(p, metric="judged")
    assert chosen("auto", "auto", "auto", raw, JUDGED, SCORES) == (5, 1, 2.0)
    # logprob: its best cell at its own coefficient
    logprob = dataclasses.replace(p, metric="logprob")
    assert chosen("auto", "auto", "auto", logprob, JUDGED, SCORES) == (3, 1, 1.5)
    assert chosen("auto", 0, 0.25, logprob, JUDGED, SCORES) == (3, 0, 0.25)


# logprob_clean: cells 10/0 > 11/0 > 12/0 by score; each cell's own samples would pick another
# coefficient, their pooled samples pick one
POOLED_SCORES = [
    {"layer": 10, "position": 0, "coefficient": 1.0, "score": 3.0},
    {"layer": 11, "position": 0, "coefficient": 1.0, "score": 2.0},
    {"layer": 12, "position": 0, "coefficient": 1.0, "score": 1.0},
    {"layer": 13, "position": 0, "coefficient": 1.0, "score": -1.0},
]
CLEAN, BROKEN, OTHER = (1, False), (1, True), (3, False)
POOLED = (
    rows(10, 0, 0.5, [CLEAN, OTHER, OTHER, OTHER])  # 1/4 at the best cell
    + rows(10, 0, 1.0, [CLEAN, CLEAN, OTHER, OTHER])  # 2/4: alone, the best cell picks 1.0
    + rows(11, 0, 0.5, [CLEAN, CLEAN, CLEAN, OTHER])
    + rows(11, 0, 1.0, [BROKEN, OTHER, OTHER, OTHER])
    + rows(12, 0, 0.5, [CLEAN, CLEAN, CLEAN, CLEAN])
    + rows(12, 0, 1.0, [CLEAN, OTHER, OTHER, OTHER])
    + rows(13, 0, 1.0, [CLEAN, CLEAN, CLEAN, CLEAN])  # 4/4, but its score is the lowest
)


def test_logprob_clean_takes_the_best_scored_cell_and_the_pooled_coefficient() -> None:
    # top 3 cells pooled: 0.5 has 1 + 3 + 4 = 8/12 clean, 1.0 has 2 + 0 + 1 = 3/12
    assert best_pooled_choice(POOLED, POOLED_SCORES, 3) == ((10, 0, 0.5), (8, 12))
    # one cell: its own samples (2/4 at 1.0 against 1/4 at 0.5)
    assert best_pooled_choice(POOLED, POOLED_SCORES, 1) == ((10, 0, 1.0), (2, 4))
    # two cells: 0.5 has 1 + 3 = 4/8, 1.0 has 2 + 0 = 2/8
    assert best_pooled_choice(POOLED, POOLED_SCORES, 2)[0] == (10, 0, 0.5)
    # a pooled tie goes to the chosen cell's own rate, then to the smaller coefficient
    tie = rows(10, 0, 0.5, [CLEAN, OTHER]) + rows(10, 0, 1.0, [CLEAN, CLEAN])
    tie += rows(11, 0, 0.5, [CLEAN, CLEAN]) + rows(11, 0, 1.0, [CLEAN, OTHER])
    assert best_pooled_choice(tie, POOLED_SCORES, 2) == ((10, 0, 1.0), (3, 4))
    even = rows(10, 0, 0.5, [CLEAN, OTHER]) + rows(10, 0, 1.0, [OTHER, CLEAN])
    assert best_pooled_choice(even, POOLED_SCORES, 1)[0] == (10, 0, 0.5)
    # a given layer: the best cell at it; no samples at the top cells is an error
    assert best_pooled_choice(POOLED, POOLED_SCORES, 3, layer=13) == ((13, 0, 1.0), (4, 4))
    with pytest.raises(StageError, match="no judged|needs judged sweep samples"):
        best_pooled_choice(POOLED[:4], POOLED_SCORES[1:], 1)
    with pytest.raises(StageError, match="logprob_clean needs scored cells"):
        best_pooled_choice(POOLED, [], 3)
    p = params(SweepParams, metric="logprob_clean", coefficient_cells=3)
    assert chosen("auto", "auto", "auto", p, POOLED, POOLED_SCORES) == (10, 0, 0.5)
    assert chosen(12, "auto", "auto", p, POOLED, POOLED_SCORES) == (12, 0, 0.5)
    assert chosen("auto", "auto", 2.0, p, POOLED, POOLED_SCORES) == (10, 0, 2.0)
    # a layer the sweep never scored: the other parts from the best choice of all
    assert chosen(7, "auto", "auto", p, POOLED, POOLED_SCORES) == (7, 0, 0.5)


def test_steer_reports_on_the_prompts_the_sweep_did_not_sample() -> None:
    held_out = [{"row": i} for i in range(5)]
    auto = ("auto", 3, 1.0)
    assert steer_prompts(held_out, 2, None, auto) == held_out[2:]
    assert steer_prompts(held_out, 2, 2, auto) == held_out[2:4]
    with pytest.raises(StageError, match="sweep.n_prompts 5 takes all 5"):
        steer_prompts(held_out, 5, None, auto)
    # a choice given whole owes the sweep nothing: every held-out prompt (the original's way)
    assert steer_prompts(held_out, 2, None, (4, 3, 1.0)) == held_out


def test_sweep_params_refuse_a_zero_or_empty_coefficient_grid() -> None:
    with pytest.raises(StageError, match="sweep.coefficients must be non-zero"):
        params(SweepParams, coefficients=[0.0, 1.0])
    with pytest.raises(StageError, match="sweep.coefficients must be non-empty"):
        params(SweepParams, coefficients=[])


def test_check_cell_names_the_parameter() -> None:
    with pytest.raises(StageError, match="steer.layer: layer 40 has no vector"):
        check_cell(40, 0, [0, 1], [0, 1, 2], "steer.layer")
    with pytest.raises(StageError, match="position 5 is outside"):
        check_cell(1, 5, [0, 1], [0, 1, 2], "steer.position")


def kl_rows(values: dict[tuple[int, int, float], float]) -> list[dict]:
    return [
        {"layer": a, "position": b, "coefficient": c, "kl": v} for (a, b, c), v in values.items()
    ]


# the KL of each POOLED choice: the 0.5 doses are cheap but for cell 10's
POOLED_KL = kl_rows(
    {(10, 0, 0.5): 0.9, (10, 0, 1.0): 0.3, (11, 0, 0.5): 0.1, (11, 0, 1.0): 0.8}
    | {(12, 0, 0.5): 0.2, (12, 0, 1.0): 0.4, (13, 0, 1.0): 0.05}
)


def test_a_kl_budget_chooses_among_the_choices_within_it() -> None:
    p = params(SweepParams, metric="logprob_clean", coefficient_cells=3)
    assert p.kl_max is None  # off by default: today's choice
    assert chosen("auto", "auto", "auto", p, POOLED, POOLED_SCORES, POOLED_KL) == (10, 0, 0.5)
    # within 0.5: cell 10 keeps only 1.0, 11 only 0.5, 12 both. The best cell is still 10;
    # the three best cells' samples within it pool 7/8 clean at 0.5 (11@0.5 3/4, 12@0.5 4/4)
    # against 3/8 at 1.0 (10@1.0 2/4, 12@1.0 1/4), but 10@0.5 is over the budget: 1.0
    budget = dataclasses.replace(p, kl_max=0.5)
    assert chosen("auto", "auto", "auto", budget, POOLED, POOLED_SCORES, POOLED_KL) == (10, 0, 1.0)
    # within 0.25: only 11@0.5, 12@0.5 and 13@1.0; the best-scoring of those cells is 11
    tight = dataclasses.replace(p, kl_max=0.25)
    assert chosen("auto", "auto", "auto", tight, POOLED, POOLED_SCORES, POOLED_KL) == (11, 0, 0.5)
    # the clean metric within 0.1: 11@0.5 (3/4) and 13@1.0 (4/4)
    clean = dataclasses.replace(p, metric="clean", kl_max=0.1)
    assert chosen("auto", "auto", "auto", clean, POOLED, POOLED_SCORES, POOLED_KL) == (13, 0, 1.0)
    # the logprob metric: the best cell within the budget at its coefficient, 1.0
    logprob = dataclasses.replace(p, metric="logprob", logprob_coefficient=1.0, kl_max=0.35)
    assert chosen("auto", "auto", "auto", logprob, POOLED, POOLED_SCORES, POOLED_KL) == (10, 0, 1.0)
    with pytest.raises(StageError, match="no sweep choice stays within it .the least KL is 0.05"):
        chosen(
            "auto",
            "auto",
            "auto",
            dataclasses.replace(p, kl_max=0.01),
            POOLED,
            POOLED_SCORES,
            POOLED_KL,
        )
    with pytest.raises(StageError, match="at its coefficient 2, and no choice there"):
        off = dataclasses.replace(logprob, logprob_coefficient=2.0)
        chosen("auto", "auto", "auto", off, POOLED, POOLED_SCORES, POOLED_KL)
    with pytest.raises(StageError, match="needs the KL of the sweep's choices"):
        chosen("auto", "auto", "auto", budget, POOLED, POOLED_SCORES)
    with pytest.raises(StageError, match="sweep.kl_max"):
        params(SweepParams, kl_max=0.0)
