"""Sampling noise keyed by row, not by batch: the Gumbel-max trick with counter-based uniforms.

``generate`` (``generation.py``) samples a row's token as the argmax of its tempered, top-p
logits plus Gumbel noise drawn from a hash of ``(seed, row, step, token)``. A sample therefore
does not depend on which rows share its batch, so batch sizes, shared prefills and
out-of-memory splits never change the tokens (up to the float differences of batched
kernels), and the CPU and a GPU draw the same noise. Stages pair conditions by giving their
rows the same ``(seed, row)``: a steered sample and its control draw the same noise.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor


def row_seed(seed: int, row: int) -> int:
    """A 63-bit seed for one row, distinct across (seed, row) pairs."""
    digest = hashlib.sha256(f"{seed}:{row}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = map(_signed, (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (the bits of uint64; products wrap, and the
    right shifts are made logical by masking), so every device computes the same bits."""
    z = x + _GOLDEN
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * _M1
    z = (z ^ ((z >> 27) & ((1 << 37) - 1))) * _M2
    return z ^ ((z >> 31) & ((1 << 33) - 1))


class RowNoise(LogitsProcessor):
    """Adds Gumbel noise keyed by (row seed, step, token), so that the argmax of the result
    is a sample from ``softmax(scores)`` (the Gumbel-max trick) whatever rows share the batch.

    The uniforms come from a counter-based hash in integer arithmetic, not from a device's
    random generator: the CPU and a GPU draw the same noise, so they sample the same tokens
    up to the float differences of their kernels. Only tokens with a finite score (the
    top-p nucleus) need noise, which keeps the cost small next to a decoding step.
    """

    def __init__(self, seeds: list[int]) -> None:
        self.seeds = torch.tensor(seeds, dtype=torch.long)
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        keys = splitmix64(splitmix64(self.seeds.to(scores.device)) + self.step)
        self.step += 1
        rows, tokens = torch.isfinite(scores).nonzero(as_tuple=True)
        bits = splitmix64(keys[rows] + tokens)
        u = (((bits >> 11) & ((1 << 53) - 1)).double() + 0.5) * 2.0**-53  # in (0, 1)
        out = scores.clone()
        out[rows, tokens] -= torch.log(-torch.log(u)).to(scores.dtype)
        return out  # type: ignore[return-value]
