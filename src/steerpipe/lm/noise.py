"""The sampler's logits processors: the top-p nucleus, and noise keyed by row, not by batch.

``generate`` (``generation.py``) samples a row's token as the argmax of its tempered, top-p
logits plus Gumbel noise drawn from a hash of ``(seed, row, step, token)``. A sample therefore
does not depend on which rows share its batch, so batch sizes, shared prefills and
out-of-memory splits never change the tokens (up to the float differences of batched
kernels), and the CPU and a GPU draw the same noise. Stages pair conditions by giving their
rows the same ``(seed, row)``: a steered sample and its control draw the same noise.

``TopP`` is the nucleus of HF's ``TopPLogitsWarper`` without sorting the whole vocabulary
every step (a sort of 90 rows x 49,152 tokens took 135 ms on the 2-core CPU, a quarter of a
decoding step of the packaged model). ``Sampler`` is the whole step, temperature, nucleus,
noise and argmax, on each row's nucleus only; ``Sampler.processors`` are the same step as
logits processors, for HF's ``generate``.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)


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


class TopP(LogitsProcessor):
    """Keeps each row's nucleus, the fewest most probable tokens whose probability reaches
    ``top_p`` (at least one), and sets the rest to -inf, as HF's ``TopPLogitsWarper``.

    The nucleus is found among each row's ``k`` most probable tokens (``topk``); rows whose
    nucleus is not inside them fall back to HF's warper. The probabilities are summed in
    float64 from the top rather than in float32 from the bottom, so a token whose mass lies
    within float rounding of the boundary may be kept by one and not the other.
    """

    def __init__(self, top_p: float, k: int = 256) -> None:
        self.top_p = float(top_p)
        self.k = k
        self.full = TopPLogitsWarper(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.top_p >= 1.0:  # only tokens of no probability at all go
            return self.full(input_ids, scores)  # type: ignore[return-value]
        return self.apply(input_ids, scores, *self.nucleus(scores))  # type: ignore[return-value]

    def apply(
        self, input_ids: torch.Tensor, scores: torch.Tensor, idx: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """``scores`` with -inf outside each row's nucleus, given ``nucleus(scores)``."""
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, idx, torch.where(keep, scores.gather(1, idx), float("-inf")))
        wide = keep[:, -1].nonzero().flatten()  # the nucleus may go on past the top k
        if len(wide):
            out[wide] = self.full(input_ids[wide], scores[wide])  # type: ignore[arg-type]
        return out

    def nucleus(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's ``k`` most probable tokens, and which of them are in its nucleus (a row
        whose last is in it may have more past them)."""
        k = min(self.k, scores.shape[-1])
        probs, idx = scores.softmax(-1).topk(k, dim=-1)
        above = probs.double().cumsum(-1) - probs.double()  # the mass of the tokens above each
        keep = above < self.top_p
        keep[:, 0] = True
        return idx, keep


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

    def select(self, rows: torch.Tensor) -> None:
        """Keeps the noise of these rows (positions in the batch) only, as generation drops
        the rows that have finished."""
        self.seeds = self.seeds[rows.cpu()]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.add(self.next_keys(scores.device), scores)  # type: ignore[return-value]

    def next_keys(self, device: torch.device) -> torch.Tensor:
        """Each row's key of this step; the next call gives the next step's."""
        keys = splitmix64(splitmix64(self.seeds.to(device)) + self.step)
        self.step += 1
        return keys

    @staticmethod
    def add(keys: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` with the noise of rows ``keys`` added to each finite score."""
        rows, tokens = torch.isfinite(scores).nonzero(as_tuple=True)
        out = scores.clone()
        out[rows, tokens] -= gumbel(keys[rows], tokens).to(scores.dtype)
        return out


def gumbel(keys: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """-Gumbel(0, 1) noise, float64, of each token under its row's key (broadcast)."""
    bits = splitmix64(keys + tokens)
    u = (((bits >> 11) & ((1 << 53) - 1)).double() + 0.5) * 2.0**-53  # in (0, 1)
    return torch.log(-torch.log(u))


class Sampler:
    """A decoding step's tokens: the argmax of ``RowNoise(TopP(scores / temperature))``, with
    the noise added and the argmax taken on each row's nucleus alone (at most ``TopP.k``
    tokens) by the same float operations, so the same tokens (``tests/test_noise.py``).

    Why: the processors write three ``[rows, vocab]`` tensors and scan two more (-inf outside
    the nucleus, the noisy copy, ``isfinite``, its ``nonzero``, the ``argmax``);
    ``benchmarks/cpu_generation.py``'s 90 solutions took 31.3 s on one thread with this,
    33.0 s with them (docs/pipeline.md, "Wall time"). A row whose nucleus goes past the top
    k, or has no finite score, goes through the processors."""

    def __init__(self, temperature: float, top_p: float, noise: RowNoise) -> None:
        self.temperature = TemperatureLogitsWarper(temperature)
        self.top_p = TopP(top_p)
        self.noise = noise

    def processors(self) -> LogitsProcessorList:
        """The same step as HF logits processors (argmax after them), for HF's ``generate``."""
        return LogitsProcessorList([self.temperature, self.top_p, self.noise])

    def select(self, rows: torch.Tensor) -> None:
        """Keeps these rows (positions in the batch) only (``RowNoise.select``)."""
        self.noise.select(rows)

    def __call__(self, input_ids: torch.LongTensor, logits: torch.Tensor) -> torch.Tensor:
        scores = self.temperature(input_ids, logits)  # type: ignore[arg-type]
        if self.top_p.top_p >= 1.0:
            return self.processors()(input_ids, logits).argmax(-1)
        keys = self.noise.next_keys(scores.device)
        idx, keep = self.top_p.nucleus(scores)
        noisy = scores.gather(1, idx) - gumbel(keys[:, None], idx).to(scores.dtype)
        noisy = noisy.masked_fill(~keep, float("-inf"))
        best = noisy.max(-1, keepdim=True).values
        # argmax's tie rule: the lowest token id of the highest
        tokens = idx.masked_fill(noisy != best, scores.shape[-1]).min(-1).values
        redo = (keep[:, -1] | ~torch.isfinite(best[:, 0])).nonzero().flatten()
        if len(redo):
            nucleus = self.top_p.apply(input_ids[redo], scores[redo], idx[redo], keep[redo])
            tokens[redo] = self.noise.add(keys[redo], nucleus).argmax(-1)
        return tokens
