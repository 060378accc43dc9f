"""Control conditions for a steering vector at its cell: is the effect the vector's own?

Beside the unsteered control, the steer stage samples under the negated vector (the same
direction, pushed the other way) and under ``n_random`` random directions with the vector's
norm (seeded Gaussian draws, rescaled), so that an effect of merely pushing the residual
stream as hard shows up as one.
"""

from __future__ import annotations

import torch


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
