"""The steer stage's conditions beside steered: controls and doses.

Controls ask whether the effect is the vector's own. Beside the unsteered control, the steer
stage samples under the negated vector (the same direction, pushed the other way) and under
``n_random`` random directions with the vector's norm (seeded Gaussian draws, rescaled), so
that an effect of merely pushing the residual stream as hard shows up as one.

Doses ask how the effect grows with the coefficient: the vector at each of
``steer.coefficients`` (``dose_<c>``). With ``steer.scale: norm`` a coefficient is in units of
the layer's mean residual-stream norm (the vector rescaled to that length at coefficient 1),
as the work on steering thinking models gives it; with ``absolute``, of the vector itself.
"""

from __future__ import annotations

from typing import Literal

import torch

Scale = Literal["absolute", "norm"]


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
