"""Reasoning and memory neurons: sparse feature rows and the masks.

- ``SparseRows``: transcoder features, one row per (prompt, step), kept sparse (CSR).
- ``neuron_masks``: alive (log10 firing frequency above a threshold), reasoning (alive, and
  the mean activation over all trace steps rises by more than a threshold from the baseline
  style to any other style), memory (alive and not reasoning).
- ``matched_features``: a random set of memory features as many as the reasoning ones and
  with the same total mean activation (within a tolerance), the control that rules out
  "scaling any features this active would do the same".

Recording the features over generation, and generating with them scaled, is in
``traces`` and ``neuron_eval``; this module needs no model, so the neurons stage runs none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SparseRows:
    """Rows of a ``[n, d]`` matrix in CSR form (mostly zeros: few features fire at a time)."""

    crow_indices: torch.Tensor  # [n + 1] int64
    col_indices: torch.Tensor  # [nnz] int64
    values: torch.Tensor  # [nnz] float32
    width: int

    @staticmethod
    def from_dense(dense: torch.Tensor) -> SparseRows:
        dense = dense.float().cpu()
        nonzero = dense != 0
        crow = torch.zeros(dense.shape[0] + 1, dtype=torch.long)
        crow[1:] = nonzero.sum(1).cumsum(0)
        return SparseRows(crow, nonzero.nonzero()[:, 1], dense[nonzero], dense.shape[1])

    @staticmethod
    def cat(parts: Sequence[SparseRows], width: int) -> SparseRows:
        if not parts:
            return SparseRows.from_dense(torch.zeros(0, width))
        counts = torch.cat([p.crow_indices.diff() for p in parts])
        crow = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return SparseRows(
            crow,
            torch.cat([p.col_indices for p in parts]),
            torch.cat([p.values for p in parts]),
            width,
        )

    @property
    def n_rows(self) -> int:
        return len(self.crow_indices) - 1

    def to_dense(self) -> torch.Tensor:
        rows = torch.repeat_interleave(torch.arange(self.n_rows), self.crow_indices.diff())
        dense = torch.zeros(self.n_rows, self.width)
        dense[rows, self.col_indices] = self.values
        return dense

    def column_mean(self) -> torch.Tensor:
        """The mean of every column over all rows."""
        total = torch.zeros(self.width, dtype=torch.float64)
        total.index_add_(0, self.col_indices, self.values.double())
        return (total / max(self.n_rows, 1)).float()

    def log_frequency(self, floor: float = -10.0) -> torch.Tensor:
        """log10 of the share of rows in which each column is nonzero; ``floor`` where never."""
        fired = torch.bincount(self.col_indices, minlength=self.width).double()
        share = fired / max(self.n_rows, 1)
        return torch.where(share > 0, share.clamp_min(1e-300).log10(), floor).float()

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.crow_indices": self.crow_indices,
            f"{prefix}.col_indices": self.col_indices,
            f"{prefix}.values": self.values,
        }

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], prefix: str, width: int) -> SparseRows:
        return SparseRows(
            tensors[f"{prefix}.crow_indices"],
            tensors[f"{prefix}.col_indices"],
            tensors[f"{prefix}.values"],
            width,
        )


def neuron_masks(
    log_frequency: torch.Tensor,
    means: dict[str, torch.Tensor],
    *,
    baseline: str,
    alive_log10_frequency: float,
    reasoning_threshold: float,
) -> dict[str, torch.Tensor]:
    """``alive``, ``reasoning`` and ``memory`` boolean masks over the features."""
    alive = log_frequency > alive_log10_frequency
    rises = torch.zeros_like(alive)
    for style, mean in means.items():
        if style != baseline:
            rises |= (mean - means[baseline]) > reasoning_threshold
    reasoning = rises & alive
    return {"alive": alive, "reasoning": reasoning, "memory": alive & ~reasoning}


def matched_features(
    means: torch.Tensor,
    target: torch.Tensor,
    pool: torch.Tensor,
    *,
    generator: torch.Generator,
    tolerance: float,
    max_tries: int = 100_000,
) -> tuple[torch.Tensor, dict[str, float | int | bool]]:
    """As many features of ``pool`` as ``target`` has (indices), whose total ``means`` is
    within ``tolerance`` (relative) of the target's total, and how close it came.

    A random draw from the pool (``generator``'s first ``randperm``, so the draw starts where
    an unmatched random control of the same seed is), then swaps: a random chosen feature is
    exchanged for the unchosen one that best closes the gap, when that closes it, until the
    gap is within the tolerance or ``max_tries`` swaps were tried. The set stays random
    where the means allow it: only as many features move as the gap needs.
    """
    k = len(target)
    m = means.double()
    order = pool[torch.randperm(len(pool), generator=generator)]
    chosen, rest = order[:k].clone(), order[k:].clone()
    want = float(m[target].sum())
    start = got = float(m[chosen].sum())
    swaps = tries = stale = 0
    # stale: tries in a row that found no closing swap; past 4k, every chosen one likely had
    while abs(want - got) > tolerance * abs(want) and len(rest) and stale < 4 * k + 100:
        if tries == max_tries:
            break
        tries += 1
        stale += 1
        i = int(torch.randint(len(chosen), (1,), generator=generator))
        gap = want - got
        # the unchosen feature whose mean is closest to what would close the gap
        j = int((m[rest] - (m[chosen[i]] + gap)).abs().argmin())
        change = float(m[rest[j]] - m[chosen[i]])
        if abs(gap - change) < abs(gap):
            chosen[i], rest[j] = rest[j].clone(), chosen[i].clone()
            got += change
            swaps += 1
            stale = 0
    got = float(m[chosen].sum())  # summed afresh: no drift from the running total
    report = {
        "features": len(chosen),
        "target_total_mean": want,
        "matched_total_mean": got,
        "unmatched_total_mean": start,
        "relative_gap": (got - want) / want if want else 0.0,
        "tolerance": tolerance,
        "within_tolerance": abs(got - want) <= tolerance * abs(want),
        "swaps": swaps,
    }
    return chosen.sort().values, report
