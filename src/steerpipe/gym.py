"""Questions of a packaged reasoning-gym task: the problems the offline default runs on.

Experiment A's models reason on them (``steering/generated_steps.py``), experiment B's
transcoder trains on their text (``transcoders/training.py``); ``reasoning-gym`` generates them
from a seed, with no download.
"""

from __future__ import annotations

from steerpipe.config import StageError


def gym_problems(task: str, n: int, seed: int, *, key: str = "steps.task") -> list[str]:
    """``n`` questions from a packaged reasoning-gym task, seeded; ``key`` names the parameter
    that chose ``task`` in the error for a task reasoning-gym does not have."""
    import reasoning_gym

    try:
        ds = reasoning_gym.create_dataset(task, size=n, seed=seed)
    except Exception as e:  # reasoning-gym raises plain errors for unknown task names
        raise StageError(f"{key} {task!r}: reasoning-gym cannot build it ({e})") from e
    return [str(ds[i]["question"]) for i in range(n)]
