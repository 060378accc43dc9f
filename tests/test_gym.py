"""gym: reasoning-gym questions, seeded; an unknown task is named with its parameter."""

from __future__ import annotations

import pytest

from steerpipe.config import StageError
from steerpipe.gym import gym_problems


def test_gym_problems_are_seeded() -> None:
    a = gym_problems("syllogism", 3, seed=7)
    assert a == gym_problems("syllogism", 3, seed=7) and len(set(a)) == 3
    assert a != gym_problems("syllogism", 3, seed=8)
    with pytest.raises(StageError, match="steps.task 'no_such_task'"):
        gym_problems("no_such_task", 1, seed=0)
    with pytest.raises(StageError, match="transcoder.tasks 'no_such_task'"):
        gym_problems("no_such_task", 1, seed=0, key="transcoder.tasks")
