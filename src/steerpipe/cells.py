"""Sweep cells (layer, position): checking them against the vectors and picking the best one."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from steerpipe.config import StageError
from steerpipe.labels import CONCLUDING


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
