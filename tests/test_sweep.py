"""sweep: the sweep's best cell by a stated rule, and clear errors for missing cells."""

from __future__ import annotations

import pytest

from steerpipe.config import StageError
from steerpipe.steering.sweep import best_cell, best_scored_cell, check_cell, concluding_by_cell


def rows(layer: int, pos: int, cats: list[int]) -> list[dict]:
    return [{"layer": layer, "position": pos, "category": c} for c in cats]


def test_best_cell_highest_rate_then_lowest_cell() -> None:
    judged = rows(5, 1, [1, 3]) + rows(3, 2, [1, 1]) + rows(4, 0, [1, 1]) + rows(2, 0, [3])
    assert concluding_by_cell(judged)[(3, 2)] == (2, 2)
    assert best_cell(judged) == (3, 2)


def test_best_cell_needs_samples() -> None:
    with pytest.raises(StageError):
        best_cell([])


def test_best_scored_cell_highest_score_then_lowest_cell() -> None:
    scores = [
        {"layer": 6, "position": 0, "score": 0.5},
        {"layer": 3, "position": 4, "score": 0.9},
        {"layer": 3, "position": 1, "score": 0.9},
        {"layer": 9, "position": 2, "score": -2.0},
    ]
    assert best_scored_cell(scores) == (3, 1)
    with pytest.raises(StageError, match="sweep.metric: logprob"):
        best_scored_cell([])


def test_check_cell_names_the_parameter() -> None:
    with pytest.raises(StageError, match="steer.layer: layer 40 has no vector"):
        check_cell(40, 0, [0, 1], [0, 1, 2], "steer.layer")
    with pytest.raises(StageError, match="position 5 is outside"):
        check_cell(1, 5, [0, 1], [0, 1, 2], "steer.position")
