"""How stable the default data set's labels are, and what measuring it costs (issue 31).

    python benchmarks/label_stability.py            # after `dvc repro steps_dataset`
    python benchmarks/label_stability.py --kinds conclusion other --samples 8 --tokens 12
    python benchmarks/label_stability.py --samples 16 --against 4   # is K = 4 enough?

Regenerates ``--samples`` openings of ``--tokens`` tokens for every step of ``--kinds`` in
``data/steps/steps.parquet`` from the trace up to it, with the traces' sampler (``steps``
section), labels them with the rule labeller and prints the seconds of the generation, the
stability summary per kind (``steering/stability.py``) and the first ``--show`` steps' openings,
to read. The stability stage runs the same on the parameters in params.yaml.

``--against K``: each step's stability from its first K draws (the stage's, with its K: draws are
keyed by row, step and sample, so they are the same draws) against the other draws: their
correlation over steps, and which steps reach 1/2 with K draws and with all of them.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from steerpipe.config import load
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.generated_steps import StepsParams
from steerpipe.steering.stability import (
    regenerate,
    share_of,
    stability_items,
    stability_summary,
)
from steerpipe.steering.steps import read_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="data/steps/steps.parquet")
    ap.add_argument("--kinds", nargs="+", default=["conclusion"])
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=12)
    ap.add_argument("--against", type=int, default=0, help="compare the first K draws")
    args = ap.parse_args()
    rows, separator = read_steps(args.steps)
    sampler = load(StepsParams)
    model, tok = load_from_params(load(ModelParams))
    items = stability_items(rows, tok, args.kinds, separator=separator)
    start = time.perf_counter()
    records = regenerate(
        model, tok, items, n_samples=args.samples, max_new_tokens=args.tokens,
        temperature=sampler.temperature, top_p=sampler.top_p, seed=args.seed,
        batch_size=args.batch_size, pad_id=int(tok.pad_token_id), progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"{len(items)} steps x {args.samples} samples x {args.tokens} tokens: {seconds:.1f} s")
    print(json.dumps(stability_summary(records, args.samples), indent=1))
    for rec in records[: args.show]:
        print(rec["kind"], rec["stability"], [text[:40] for text in rec["openings"]])
    if 0 < args.against < args.samples:
        against(records, args.against)


def against(records: list[dict[str, Any]], k: int) -> None:
    """How well the first ``k`` draws of each step tell its stability over all of them."""
    first = np.array([share_of(r["kind"], r["labels"][:k]) for r in records])
    rest = np.array([share_of(r["kind"], r["labels"][k:]) for r in records])
    every = np.array([r["stability"] for r in records])
    n, gap = len(records[0]["labels"]), np.abs(first - every)
    print(
        f"stability from the first {k} draws against the other {n - k}: correlation over "
        f"{len(records)} steps {np.corrcoef(first, rest)[0, 1]:.3f}; mean absolute difference "
        f"from all {n}: {gap.mean():.3f} (largest {gap.max():.3f})"
    )
    a, b = set(np.flatnonzero(first >= 0.5)), set(np.flatnonzero(every >= 0.5))
    print(
        f"at least 1/2: {len(a)} steps with {k} draws, {len(b)} with {n}; {len(a & b)} in both, "
        f"{len(a - b)} only with {k}, {len(b - a)} only with {n}"
    )


if __name__ == "__main__":
    main()
