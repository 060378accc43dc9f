"""The sweep (``sweep``): its cells (layer, position), checked against the vectors, and the best
one by either metric (``sweep.metric``: the judged concluding rate of sampled continuations, or
the teacher-forced log-probability score of ``logprob``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from steerpipe.config import StageError, check
from steerpipe.steering.labels import CONCLUDING


@dataclass(frozen=True)
class SweepParams:
    SECTION: ClassVar[str] = "sweep"
    layers: list[int]
    positions: list[int]
    coefficient: float
    n_prompts: int  # the first test prompts of the negative kind
    n_samples: int  # per prompt and cell
    seed: int
    metric: Literal["judged", "logprob"]  # which one steer's auto cell follows
    logprob_examples: int  # per kind: the first training examples the logprob metric scores

    def __post_init__(self) -> None:
        check(bool(self.layers) and bool(self.positions), "sweep.layers/positions", "non-empty")
        check(self.n_prompts >= 1, "sweep.n_prompts", "at least 1")
        check(self.n_samples >= 1, "sweep.n_samples", "at least 1")
        check(self.logprob_examples >= 1, "sweep.logprob_examples", "at least 1")


def check_cell(layer: int, pos: int, layers: list[int], positions: list[int], key: str) -> None:
    """A clear error naming ``key`` when the vectors have no (layer, pos)."""
    if layer not in layers:
        raise StageError(f"{key}: layer {layer} has no vector; captured layers are {layers}")
    if pos not in positions:
        raise StageError(f"{key}: position {pos} is outside the captured positions {positions}")


def concluding_by_cell(judged: list[dict[str, Any]]) -> dict[tuple[int, int], tuple[int, int]]:
    """(concluding, judged) sample counts per (layer, position)."""
    counts: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for r in judged:
        c = counts[(int(r["layer"]), int(r["position"]))]
        c[0] += r["category"] == CONCLUDING
        c[1] += 1
    return {cell: (hit, n) for cell, (hit, n) in counts.items()}


def best_cell(judged: list[dict[str, Any]]) -> tuple[int, int]:
    """The cell with the highest concluding rate; ties go to the lower layer, then position."""
    counts = concluding_by_cell(judged)
    if not counts:
        raise StageError("'auto' needs judged sweep samples, and there are none")
    return min(counts, key=lambda c: (-counts[c][0] / counts[c][1], c))


def best_scored_cell(scores: list[dict[str, Any]]) -> tuple[int, int]:
    """The cell with the highest logprob score; ties as ``best_cell``."""
    if not scores:
        raise StageError("'auto' with sweep.metric: logprob needs scored cells, and there are none")
    best = min(scores, key=lambda r: (-r["score"], r["layer"], r["position"]))
    return int(best["layer"]), int(best["position"])


def chosen_cell(
    layer: Literal["auto"] | int,
    position: Literal["auto"] | int,
    metric: Literal["judged", "logprob"],
    judged: list[dict[str, Any]],
    scores: list[dict[str, Any]],
) -> tuple[int, int]:
    """``steer.layer`` / ``steer.position``, ``auto`` taking the best sweep cell by ``metric``."""
    auto = best_cell(judged) if metric == "judged" else best_scored_cell(scores)
    return (auto[0] if layer == "auto" else layer, auto[1] if position == "auto" else position)
