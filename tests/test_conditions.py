"""conditions: the steer stage's condition names and their places on the dose axis."""

from __future__ import annotations

from steerpipe.steering.conditions import condition_coefficient, dose_coefficients, dose_name


def test_dose_coefficients_skip_what_other_conditions_sample() -> None:
    # 0 is control, 1 steered, -1 negated; repeats are sampled once; the order is kept
    assert dose_coefficients(1.0, [2.0, 0.0, 1.0, -1.0, 0.5, 2.0, -3.0]) == [2.0, 0.5, -3.0]
    assert dose_coefficients(1.0, []) == []
    assert [dose_name(c) for c in (0.25, 2.0, -3.0)] == ["dose_0.25", "dose_2.0", "dose_-3.0"]


def test_condition_coefficient_places_each_condition_on_the_dose_axis() -> None:
    want = {"control": 0.0, "steered": 1.5, "negated": -1.5, "dose_0.25": 0.25, "dose_-3.0": -3.0}
    assert {name: condition_coefficient(name, 1.5) for name in want} == want
    assert condition_coefficient("random_0", 1.5) is None
    assert condition_coefficient(dose_name(0.1 + 0.2), 1.0) == 0.1 + 0.2  # exactly
