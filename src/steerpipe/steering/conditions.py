"""The steer stage's condition names, and where each sits on the dose axis.

The steer stage samples them (``steering/steer.py``, ``steering/baselines.py``), solve_steered
names its doses the same way, and the report reads them back from the samples' ``condition``
column. Kept apart from ``steer.py`` so that the report needs neither torch nor the steering
hooks: it starts about a second sooner, and an edit to the hooks does not re-run it.
"""

from __future__ import annotations

BASELINES = ("instruction", "prefill")  # the prompting baselines' condition names


def dose_coefficients(coefficient: float, coefficients: list[float]) -> list[float]:
    """``coefficients`` without the ones other conditions already sample (0 is control,
    ``coefficient`` steered, ``-coefficient`` negated) or repeat, in their given order."""
    taken = {0.0, coefficient, -coefficient}
    doses: list[float] = []
    for c in coefficients:
        if c not in taken:
            taken.add(c)
            doses.append(c)
    return doses


def dose_name(coefficient: float) -> str:
    return f"dose_{float(coefficient)}"  # str of a float reads back as the same float


def condition_coefficient(condition: str, coefficient: float) -> float | None:
    """Where a condition sits on the dose axis (``coefficient``: steered's); None for the
    random directions, which are not the vector."""
    if condition.startswith("dose_"):
        return float(condition.removeprefix("dose_"))
    return {"control": 0.0, "steered": coefficient, "negated": -coefficient}.get(condition)
