"""The sweep (``sweep``): its choices (layer, position, coefficient), checked against the vectors,
and the best one by ``sweep.metric``:

- ``logprob_clean`` (the default): the cell with the best teacher-forced score of ``logprob``
  (no sampling noise), and the coefficient with the best clean rate pooled over the
  ``sweep.coefficient_cells`` best-scoring cells (``best_pooled_choice``): a choice that the
  draw of data and samples moves less than the sampled rates' (docs/experiment-a.md);
- ``clean``: the rate of sampled continuations that conclude and are not degenerate (the
  judge's ``clean``, ``steering/quality.py``), so that a coefficient that concludes by
  breaking the text is not chosen;
- ``judged``: the raw concluding rate, as the original chose its cell (for both, ties go to
  the cell with the higher logprob score);
- ``logprob``: the best-scoring cell at the metric's own coefficient,
  ``sweep.logprob_coefficient``.

``sweep.kl_max``, where set, is a budget on side effects (as Activation-Steered Compression,
arXiv 2507.04742, bounds its coefficient): the automatic choice is made among the choices
whose KL on neutral text (stage ``sweep_kl``, ``lm/divergence.py``) is at most it
(``within_kl``); with ``logprob``, among the cells within it at the metric's coefficient. Parts
of the choice given as numbers are taken as given.

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

Metric = Literal["logprob_clean", "clean", "judged", "logprob"]
Measure = Literal["concluding", "clean", "degenerate"]  # what a judged sample can count for
MEASURES: tuple[Measure, ...] = ("concluding", "clean", "degenerate")
MEASURE_OF: dict[Literal["clean", "judged"], Measure] = {"clean": "clean", "judged": "concluding"}
Choice = tuple[int, int, float]  # layer, position, coefficient
CHOICE_KEYS = ("layer", "position", "coefficient")


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
    logprob_batch_size: int  # rows a teacher-forced forward of the logprob metric
    coefficient_cells: int  # logprob_clean: the best-scoring cells whose samples choose it
    kl_max: float | None  # the automatic choice's budget of KL on neutral text (None: none)

    def __post_init__(self) -> None:
        check(bool(self.layers) and bool(self.positions), "sweep.layers/positions", "non-empty")
        check(bool(self.coefficients), "sweep.coefficients", "non-empty")
        check(0.0 not in self.coefficients, "sweep.coefficients", "non-zero (0 is control)")
        check(self.n_prompts >= 1, "sweep.n_prompts", "at least 1")
        check(self.n_samples >= 1, "sweep.n_samples", "at least 1")
        check(self.logprob_examples >= 1, "sweep.logprob_examples", "at least 1")
        check(self.logprob_batch_size >= 1, "sweep.logprob_batch_size", "at least 1")
        check(self.coefficient_cells >= 1, "sweep.coefficient_cells", "at least 1")
        check(self.kl_max is None or self.kl_max > 0, "sweep.kl_max", "null or above 0")


def choice_of(row: dict[str, Any]) -> Choice:
    """The (layer, position, coefficient) of a row of the sweep's samples, scores or KL."""
    return int(row["layer"]), int(row["position"]), float(row["coefficient"])


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
        c = counts[choice_of(r)]
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


def best_pooled_choice(
    judged: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    k: int,
    *,
    layer: Literal["auto"] | int = "auto",
    position: Literal["auto"] | int = "auto",
) -> tuple[Choice, tuple[int, int]]:
    """``logprob_clean``: the best-scoring cell (with the ``layer`` / ``position`` given, if
    any), and the coefficient with the highest clean rate over the samples of the ``k``
    best-scoring such cells: 4 samples a choice cannot rank coefficients, ``k`` cells'
    together can, if a dose that works at one cell works at its near rivals (the vectors are
    scaled to their own length); among the coefficients the chosen cell has samples of (all,
    unless a KL budget left it fewer). Ties go to the chosen cell's own clean rate, then to the
    smaller coefficient. Also (hits, samples) of the pooled rate."""
    cells = sorted(
        (
            r
            for r in scores
            if layer in ("auto", r["layer"]) and position in ("auto", r["position"])
        ),
        key=lambda r: (-r["score"], r["layer"], r["position"]),
    )
    if not cells:
        raise StageError("'auto' with sweep.metric: logprob_clean needs scored cells")
    top = [(int(r["layer"]), int(r["position"])) for r in cells[:k]]
    pooled: dict[float, list[int]] = defaultdict(lambda: [0, 0])
    own: dict[float, float] = {}
    for (cl, cp, coefficient), (h, n) in rates_by_choice(judged, "clean").items():
        if (cl, cp) in top:
            pooled[coefficient][0] += h
            pooled[coefficient][1] += n
        if (cl, cp) == top[0]:
            own[coefficient] = h / n
    if not pooled:
        raise StageError(f"'auto' needs judged sweep samples at the best-scoring cells {top}")
    # a coefficient the chosen cell sampled (within sweep.kl_max, all of the sweep's)
    candidates = [c for c in pooled if c in own] or list(pooled)
    best = min(candidates, key=lambda c: (-pooled[c][0] / pooled[c][1], -own.get(c, -1.0), c))
    return (top[0][0], top[0][1], best), (pooled[best][0], pooled[best][1])


def within_kl(
    judged: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    kl: list[dict[str, Any]],
    sweep: SweepParams,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sweep samples and scored cells that ``sweep.kl_max`` leaves: samples of the choices
    whose KL (``kl``: one row per choice) is at most it, and cells with such a choice (with
    ``sweep.metric: logprob``, at ``sweep.logprob_coefficient``)."""
    assert sweep.kl_max is not None
    allowed = {choice_of(r) for r in kl if r["kl"] <= sweep.kl_max}
    if not allowed:
        least = min((r["kl"] for r in kl), default=math.nan)
        raise StageError(
            f"sweep.kl_max {sweep.kl_max:g}: no sweep choice stays within it (the least KL is "
            f"{least:.3g}); raise it, or add smaller sweep.coefficients"
        )
    at = sweep.logprob_coefficient if sweep.metric == "logprob" else None
    cells = {(lay, pos) for lay, pos, c in allowed if at is None or c == at}
    if not cells:
        raise StageError(
            f"sweep.kl_max with sweep.metric: logprob bounds the cells at its coefficient "
            f"{at:g}, and no choice there stays within {sweep.kl_max:g}"
        )
    return (
        [r for r in judged if choice_of(r) in allowed],
        [r for r in scores if (r["layer"], r["position"]) in cells],
    )


def chosen(
    layer: Literal["auto"] | int,
    position: Literal["auto"] | int,
    coefficient: Literal["auto"] | float,
    sweep: SweepParams,
    judged: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    kl: list[dict[str, Any]] | None = None,
) -> Choice:
    """``steer.layer`` / ``position`` / ``coefficient``, each ``auto`` taken from the best sweep
    choice by ``sweep.metric`` among those that agree with the parts given (all choices when
    none agrees: a layer the sweep never sampled still gets the best position); with
    ``sweep.kl_max``, among those within it (``within_kl``; ``kl``: the KL of each choice)."""
    if sweep.kl_max is not None:
        if kl is None:
            raise StageError("sweep.kl_max needs the KL of the sweep's choices (stage sweep_kl)")
        judged, scores = within_kl(judged, scores, kl, sweep)
    given = (layer, position, coefficient)
    if sweep.metric == "logprob":
        cell = best_scored_cell(scores)
        auto: Choice = (cell[0], cell[1], sweep.logprob_coefficient)
    elif sweep.metric == "logprob_clean":
        layers, positions = {r["layer"] for r in scores}, {r["position"] for r in scores}
        auto = best_pooled_choice(
            judged,
            scores,
            sweep.coefficient_cells,
            layer=layer if layer in layers else "auto",  # one never scored: the best cell
            position=position if position in positions else "auto",
        )[0]
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
