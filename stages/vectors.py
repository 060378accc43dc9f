"""Stage vectors: steering vectors, mean(positive kind) - mean(negative kind).

    python stages/vectors.py              (reads `prepare.kinds`)

Output: data/vectors/vectors.safetensors, tensor ``vectors`` ``[n_layers, n_positions, d_model]``,
with the counts behind each mean and the vector norms in its metadata;
data/vectors/metrics.json (the counts).
"""

from __future__ import annotations

from steerpipe.config import load_params, run_stage
from steerpipe.storage import read_tensors, write_json, write_tensors


def main() -> None:
    positive, negative = load_params("prepare")["kinds"]
    pos, meta = read_tensors(f"data/activations/{positive}.safetensors")
    neg, _ = read_tensors(f"data/activations/{negative}.safetensors")
    vectors = pos["resid_pre"].mean(0) - neg["resid_pre"].mean(0)
    counts = {positive: pos["resid_pre"].shape[0], negative: neg["resid_pre"].shape[0]}
    norms = vectors.norm(dim=-1)  # [n_layers, n_positions]: how far each vector moves
    meta = {
        **meta,
        "positive": positive,
        "negative": negative,
        "counts": counts,
        "norms": [[round(float(x), 4) for x in row] for row in norms],
    }
    write_tensors({"vectors": vectors}, "data/vectors/vectors.safetensors", meta)
    write_json({"counts": counts}, "data/vectors/metrics.json")
    print(counts)


if __name__ == "__main__":
    run_stage(main)
