"""Stage vectors: steering vectors, mean(positive kind) - mean(negative kind).

    dvc repro vectors
    paths from dvc.yaml's cmd: --activations --vectors --metrics
    reads `prepare.kinds`

The activation dumps are read a chunk of rows at a time (summed in float64), so they may be
larger than memory.

Outputs: the vectors, tensor ``vectors`` ``[n_layers, n_positions, d_model]``, with the counts
behind each mean, the vector norms and each layer's mean residual-stream norm (over every
training row and position of both kinds: the unit of ``steer.scale: norm``) in its metadata;
the metrics (the counts).
"""

from __future__ import annotations

from pathlib import Path

import torch

from steerpipe.config import StageError, load, run_stage, stage_args
from steerpipe.steering.prepare import PrepareParams
from steerpipe.storage import iter_rows, read_metadata, write_json, write_tensors

INPUTS = ("activations",)
OUTPUTS = ("vectors", "metrics")


def mean_rows(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(float64 mean over the first dimension of ``resid_pre`` ``[layers, positions, d]``,
    the summed norms of its rows ``[layers, positions]``, number of rows)."""
    total: torch.Tensor | None = None
    norms: torch.Tensor | None = None
    n = 0
    for chunk in iter_rows(path, "resid_pre"):
        part, part_norms = chunk.double().sum(0), chunk.double().norm(dim=-1).sum(0)
        total = part if total is None else total + part
        norms = part_norms if norms is None else norms + part_norms
        n += chunk.shape[0]
    if total is None or norms is None:
        raise StageError(f"{path} has no rows: no training example of that kind")
    return total / n, norms, n


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    positive, negative = load(PrepareParams).kinds
    pos, pos_norms, n_pos = mean_rows(paths["activations"] / f"{positive}.safetensors")
    neg, neg_norms, n_neg = mean_rows(paths["activations"] / f"{negative}.safetensors")
    meta = read_metadata(paths["activations"] / f"{positive}.safetensors")
    vectors = (pos - neg).float()
    counts = {positive: n_pos, negative: n_neg}
    norms = vectors.norm(dim=-1)  # [n_layers, n_positions]: how far each vector moves
    # per layer, over rows and positions: how long the residual stream the vector is added to is
    resid_norms = (pos_norms + neg_norms).mean(-1) / (n_pos + n_neg)
    meta = {
        **meta,
        "positive": positive,
        "negative": negative,
        "counts": counts,
        "norms": [[round(float(x), 4) for x in row] for row in norms],
        "resid_norms": [round(float(x), 4) for x in resid_norms],
    }
    write_tensors({"vectors": vectors}, paths["vectors"], meta)
    write_json({"counts": counts}, paths["metrics"])
    print(counts)


if __name__ == "__main__":
    run_stage(main)
