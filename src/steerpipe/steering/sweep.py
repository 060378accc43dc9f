"""The sweep (``sweep``): its choices (layer, position, coefficient), checked against the vectors,
and the best one by ``sweep.metric``:

- ``clean`` (the default): the rate of sampled continuations that conclude and are not
  degenerate (the judge's ``clean``, ``steering/quality.py``), so that a coefficient that
  concludes by breaking the text is not chosen;
- ``judged``: the raw concluding rate, as the original chose its cell (for both, ties go to
  the cell with the higher logprob score);
- ``logprob``: the teacher-forced score of ``logprob`` (one coefficient,
  ``sweep.logprob_coefficient``).

The sweep samples the first ``n_prompts`` held-out prompts of the negative kind, and the steer
stage reports on the others only (``steer_prompts``): a choice is never scored on the prompts
that chose it, as AxBench chooses its steering factor on one half of the prompts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from steerpipe.config import StageError, check
from steerpipe.steering.labels import CONCLUDING

Metric = Literal["clean", "judged", "logprob"]
Measure = Literal["concluding", "clean", "degenerate"]  # what a judged sample can count for
MEASURES: tuple[Measure, ...] = ("concluding", "clean", "degenerate")
MEASURE_OF: dict[Literal["clean", "judged"], Measure] = {"clean": "clean", "judged": "concluding"}
Choice = tuple[int, int, float]  # layer, position, coefficient


@dataclass(frozen=True)
class SweepParams:
    SECTION: ClassVar[str] = "sweep"
    layers: list[int]
    positions: list[int]
    coefficients: list[float]  # in steer.scale's units, sampled at every cell
    n_prompts: int  # the first test prompts of the negative kind (steer reports on the rest)
    n_samples: int  # per prompt and choice
    seed: int
    metric: Metric  # which one steer's auto layer, position and coefficient follow
    logprob_examples: int  # per kind: the first training examples the logprob metric scores
    logprob_coefficient: float  # the logprob metric's coefficient, in steer.scale's units

    def __post_init__(self) -> None:
        check(bool(self.layers) and bool(self.positions), "sweep.layers/positions", "non-empty")
        check(bool(self.coefficients), "sweep.coefficients", "non-empty")
        check(0.0 not in self.coefficients, "sweep.coefficients", "non-zero (0 is control)")
        check(self.n_prompts >= 1, "sweep.n_prompts", "at least 1")
        check(self.n_samples >= 1, "sweep.n_samples", "at least 1")
        check(self.logprob_examples >= 1, "sweep.logprob_examples", "at least 1")


def check_cell(layer: int, pos: int, layers: list[int], positions: list[int], key: str) -> None:
    """A clear error naming ``key`` when the vectors have no (layer, pos)."""
    if layer not in layers:
        raise StageError(f"{key}: layer {layer} has no vector; captured layers are {layers}")
    if pos not in positions:
        raise StageError(f"{key}: position {pos} is outside the captured positions {positions}")


def hit(row: dict[str, Any], measure: Measure) -> bool:
    """Does a judged sample count for ``measure``: concluding (the raw rate, as the original
    counted), clean (concluding and not degenerate) or degenerate (``steering/quality.py``)?"""
    return row["category"] == CONCLUDING if measure == "concluding" else bool(row[measure])


def rates_by_choice(
    judged: list[dict[str, Any]], measure: Measure = "concluding"
) -> dict[Choice, tuple[int, int]]:
    """(hits, samples) per (layer, position, coefficient)."""
    counts: dict[Choice, list[int]] = defaultdict(lambda: [0, 0])
    for r in judged:
        c = counts[(int(r["layer"]), int(r["position"]), float(r["coefficient"]))]
        c[0] += hit(r, measure)
        c[1] += 1
    return {choice: (h, n) for choice, (h, n) in counts.items()}


def best_choice(
    judged: list[dict[str, Any]],
    metric: Literal["clean", "judged"],
    scores: list[dict[str, Any]] | None = None,
) -> Choice:
    """The choice with the highest rate by ``metric``. A few samples a choice tie often, and
    the lowest layer wins a tie by luck; so ties go to the cell with the higher logprob score
    (``scores``: the teacher-forced metric, which has no sampling noise), then to the lower
    layer, position, coefficient."""
    counts = rates_by_choice(judged, MEASURE_OF[metric])
    if not counts:
        raise StageError("'auto' needs judged sweep samples, and there are none")
    score = {(r["layer"], r["position"]): r["score"] for r in scores or []}
    return min(
        counts, key=lambda c: (-counts[c][0] / counts[c][1], -score.get(c[:2], -math.inf), c)
    )


def best_scored_cell(scores: list[dict[str, Any]]) -> tuple[int, int]:
    """The cell with the highest logprob score; ties go to the lower layer, then position."""
    if not scores:
        raise StageError("'auto' with sweep.metric: logprob needs scored cells, and there are none")
    best = min(scores, key=lambda r: (-r["score"], r["layer"], r["position"]))
    return int(best["layer"]), int(best["position"])


def chosen(
    layer: Literal["auto"] | int,
    position: Literal["auto"] | int,
    coefficient: Literal["auto"] | float,
    sweep: SweepParams,
    judged: list[dict[str, Any]],
    scores: list[dict[str, Any]],
) -> Choice:
    """``steer.layer`` / ``position`` / ``coefficient``, each ``auto`` taken from the best sweep
    choice by ``sweep.metric`` among those that agree with the parts given (all choices when
    none agrees: a layer the sweep never sampled still gets the best position)."""
    given = (layer, position, coefficient)
    if sweep.metric == "logprob":
        cell = best_scored_cell(scores)
        auto: Choice = (cell[0], cell[1], sweep.logprob_coefficient)
    else:
        agree = [
            r
            for r in judged
            if all(v == "auto" or v == r[k] for v, k in zip(given, CHOICE_KEYS, strict=True))
        ]
        auto = best_choice(agree or judged, sweep.metric, scores)
    return (
        auto[0] if layer == "auto" else int(layer),
        auto[1] if position == "auto" else int(position),
        auto[2] if coefficient == "auto" else float(coefficient),
    )


CHOICE_KEYS = ("layer", "position", "coefficient")


def steer_prompts(
    held_out: list[dict[str, Any]], n_sweep: int, n: int | None, given: tuple[Any, ...]
) -> list[dict[str, Any]]:
    """The held-out prompts the steer stage reports on (at most ``n`` of them): when any part
    of its choice (``given``: layer, position, coefficient) is ``auto``, those after the
    sweep's ``n_sweep``, so that a choice is not scored on the prompts that made it."""
    if "auto" not in given:
        n_sweep = 0
    rest = held_out[n_sweep:]
    if not rest:
        raise StageError(
            f"sweep.n_prompts {n_sweep} takes all {len(held_out)} held-out prompts of the "
            "negative kind, and steer reports on the others: lower it or raise prepare.test_size"
        )
    return rest if n is None else rest[:n]
