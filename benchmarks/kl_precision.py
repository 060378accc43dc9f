"""How many tokens of neutral text the KL of a steering vector needs (issue 35).

    python benchmarks/kl_precision.py     # after `dvc repro vectors`; about 1 minute on 2 cores
    python benchmarks/kl_precision.py --sizes 32x64 8x64 4x32 --cells 12/1 15/1 --coefficients 0.5 1

For each vector (the default's vectors at ``--cells``, each at ``--coefficients`` in the
vector's own length) the mean KL(steered || plain) per token on ``kl``'s neutral text
(``steerpipe/lm/divergence.py``), with the text cut into each of ``--sizes`` (passages x
tokens); then each size's relative difference from the first (the largest), and the seconds it
took. The steer stage and ``sweep_kl`` use ``kl.n_texts`` x ``kl.tokens`` (8 x 64).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from steerpipe.config import load
from steerpipe.lm.divergence import KLParams, neutral_texts, next_token_kl
from steerpipe.lm.hooks import Steer
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.steer import cell_vector
from steerpipe.storage import read_tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["32x64", "8x64", "16x32", "8x32", "4x32"])
    parser.add_argument("--cells", nargs="+", default=["12/1", "15/1", "21/0", "3/2"])
    parser.add_argument("--coefficients", nargs="+", type=float, default=[0.5, 1.0])
    parser.add_argument("--vectors", default="data/vectors/vectors.safetensors")
    args = parser.parse_args()
    model, tok = load_from_params(load(ModelParams))
    tensors, meta = read_tensors(args.vectors)
    names, steers = [], []
    for cell in args.cells:
        layer, pos = (int(x) for x in cell.split("/"))
        unit, _ = cell_vector(tensors, meta, layer, pos, "absolute")
        for c in args.coefficients:
            names.append(f"{layer}/{pos} x{c:g}")
            steers.append(Steer(layer, c * unit))
    base = load(KLParams)
    reference: list[float] = []
    print("passages x tokens | seconds | " + " | ".join(names))
    for size in args.sizes:
        n, tokens = (int(x) for x in size.split("x"))
        texts = neutral_texts(tok, dataclasses.replace(base, n_texts=n, tokens=tokens))
        start = time.perf_counter()
        kl = next_token_kl(model, texts, steers, batch_size=base.batch_size, progress=False)
        seconds = time.perf_counter() - start
        reference = reference or kl
        cells = [f"{v:.3f} ({v / r - 1:+.0%})" for v, r in zip(kl, reference, strict=True)]
        print(f"{size} | {seconds:.1f} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
