"""The steer stage (``steer``): its cell's vector, and its conditions beside steered: controls
and doses.

Controls ask whether the effect is the vector's own. Beside the unsteered control, the steer
stage samples under the negated vector (the same direction, pushed the other way) and under
``n_random`` random directions with the vector's norm (seeded Gaussian draws, rescaled), so
that an effect of merely pushing the residual stream as hard shows up as one.

Doses ask how the effect grows with the coefficient: the vector at each of
``steer.coefficients`` (``dose_<c>``). With ``steer.scale: norm`` a coefficient is in units of
the layer's mean residual-stream norm (the vector rescaled to that length at coefficient 1),
as the work on steering thinking models gives it; with ``absolute``, of the vector itself.

The prompting baselines (``steering/baselines.py``) follow these conditions in the stage; the
conditions' names and places on the dose axis are in ``steering/conditions.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from steerpipe.config import check
from steerpipe.lm.hooks import Steer
from steerpipe.steering.conditions import dose_coefficients, dose_name
from steerpipe.steering.sweep import SweepParams, check_cell, chosen

Scale = Literal["absolute", "norm"]


@dataclass(frozen=True)
class SteerParams:
    """params.yaml ``steer``: the cell, the coefficients and the conditions (the steer stage;
    the solve stages take its cell, scale and vector)."""

    SECTION: ClassVar[str] = "steer"
    layer: Literal["auto"] | int  # auto: the best sweep choice by sweep.metric
    position: Literal["auto"] | int
    coefficient: Literal["auto"] | float
    coefficients: list[float]  # the doses, beside 0 (control) and coefficient (steered)
    scale: Scale  # absolute: in the vector's length; norm: in the layer's mean resid norm
    n_prompts: Literal["all"] | int  # test prompts of the negative kind, after the sweep's
    n_samples: int  # per prompt and condition
    n_random: int  # random directions of the vector's norm, as controls
    instruction: str | None  # the instruction baseline's question (None: no such baseline)
    prefill_tokens: int  # the prefill baseline's opener, in tokens (0: no such baseline)
    seed: int  # of the sampling and of the random directions

    def __post_init__(self) -> None:
        check(self.n_prompts == "all" or self.n_prompts >= 1, "steer.n_prompts", "all or >= 1")
        check(self.n_samples >= 1, "steer.n_samples", "at least 1")
        check(self.n_random >= 0, "steer.n_random", "at least 0")
        check(
            self.instruction is None or bool(self.instruction.strip()),
            "steer.instruction",
            "null or a text",
        )
        check(self.prefill_tokens >= 0, "steer.prefill_tokens", "at least 0")


def random_directions(vector: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` random directions (rows) with ``vector``'s norm, dtype and device; the draw
    depends only on ``seed`` and the vector's size."""
    g = torch.Generator().manual_seed(seed)
    draws = torch.randn(n, vector.numel(), generator=g, dtype=torch.float64)
    draws = draws / draws.norm(dim=1, keepdim=True) * vector.double().norm()
    return draws.to(dtype=vector.dtype, device=vector.device).reshape(n, *vector.shape)


def control_vectors(vector: torch.Tensor, n_random: int, seed: int) -> dict[str, torch.Tensor]:
    """The control conditions' vectors by name: ``negated``, then ``random_0`` ..."""
    controls = {"negated": -vector}
    for k, direction in enumerate(random_directions(vector, n_random, seed)):
        controls[f"random_{k}"] = direction
    return controls


def unit_vector(vector: torch.Tensor, scale: Scale, resid_norm: float | None) -> torch.Tensor:
    """The vector at coefficient 1: itself (``absolute``), or its direction at the length of
    the layer's mean residual-stream norm (``norm``)."""
    if scale == "absolute":
        return vector
    if resid_norm is None:
        raise ValueError("steer.scale: norm needs the layer's mean residual-stream norm")
    return (vector.double() / vector.double().norm() * resid_norm).to(vector.dtype)


def steer_vector(
    vectors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    layer: Literal["auto"] | int,
    position: Literal["auto"] | int,
    coefficient: Literal["auto"] | float,
    scale: Scale,
    sweep: SweepParams,
    judged: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    kl: list[dict[str, Any]] | None = None,
) -> tuple[int, int, float, torch.Tensor, float]:
    """Steer's choice (``steer.layer`` / ``position`` / ``coefficient``, ``auto`` by
    ``sweep.metric`` within ``sweep.kl_max``: ``sweep.chosen``) checked against the vectors
    file (``vectors``, ``meta``), its vector at coefficient 1 (``unit_vector``) and the
    layer's mean residual-stream norm; for every stage that steers at steer's cell."""
    at, pos, c = chosen(layer, position, coefficient, sweep, judged, scores, kl)
    check_cell(at, pos, meta["layers"], meta["positions"], "steer.layer/position")
    return at, pos, c, *cell_vector(vectors, meta, at, pos, scale)


def cell_vector(
    vectors: dict[str, torch.Tensor], meta: dict[str, Any], layer: int, pos: int, scale: Scale
) -> tuple[torch.Tensor, float]:
    """A cell's vector at coefficient 1 in ``scale``'s units, and its layer's mean
    residual-stream norm."""
    index = meta["layers"].index(layer)
    resid_norm = meta["resid_norms"][index]
    return unit_vector(vectors["vectors"][index, pos], scale, resid_norm), resid_norm


def vector_conditions(
    cell: dict[str, Any],
    layer: int,
    coefficient: float,
    unit: torch.Tensor,
    p: SteerParams,
) -> list[tuple[dict[str, Any], Steer | None]]:
    """The steer stage's vector conditions in their order: control, steered, the controls,
    the doses; each with the fields its records carry (``cell``, ``condition``,
    ``coefficient``, ``vector_norm``: the length of what is added, 0 for none). The
    baselines follow them (``steering/baselines.py``)."""
    vec = coefficient * unit
    vectors: list[tuple[str, float, torch.Tensor | None]] = [
        ("control", coefficient, None),
        ("steered", coefficient, vec),
        *((name, coefficient, v) for name, v in control_vectors(vec, p.n_random, p.seed).items()),
        *((dose_name(c), c, c * unit) for c in dose_coefficients(coefficient, p.coefficients)),
    ]
    return [
        (
            {**cell, "condition": name, "coefficient": c}
            | {"vector_norm": 0.0 if v is None else round(float(v.norm()), 4)},
            None if v is None else Steer(layer, v),
        )
        for name, c, v in vectors
    ]
