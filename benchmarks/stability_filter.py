"""What the stability filter does to the vector and to the steered result (issue 31).

    dvc exp run --temp -n s31-all -S prepare.positive_test_size=0 report
    dvc exp run --temp -n s31-stable -S prepare.positive_test_size=0 \\
        -S prepare.min_stability=0.5 report
    python benchmarks/stability_filter.py s31-all s31-stable

Reads two runs' outputs from the DVC cache (``dvc.api``; an experiment's name, a commit, or
``workspace``): the first without the filter, the second with it. Both hold out the same
negative-kind prompts, so steer's control samples are the same and its steered samples share
their noise: the per-prompt comparison is paired. Prints:

- the positive kind's training examples of each run, and how stable they are;
- the two vectors' cosine at the steered cell and at every layer's vector at that position, and
  the same for vectors from random subsets of the first run's positive examples of the second
  run's size (``--draws``, seeded): how far the filter moves the vector beyond what fewer
  examples alone would;
- each run's cell and clean rates, and the second's clean rate minus the first's for every
  condition they share, with a bootstrap interval over prompts and a sign-flip test.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import dvc.api
import numpy as np
import torch

from steerpipe.stats import cluster_ci, mean_statistic, sign_flip_p, wilson_interval
from steerpipe.storage import read_json, read_parquet, read_tensors

FILES = (
    "data/prepare/examples.parquet",
    "data/stability/stability.parquet",
    "data/activations/conclusion.safetensors",
    "data/activations/other.safetensors",
    "data/vectors/vectors.safetensors",
    "data/steer/judged.parquet",
    "data/report/metrics.json",
)


def fetch(rev: str, into: Path) -> Path:
    """The run's files of ``FILES`` under ``into``; ``workspace`` reads the files as they are."""
    if rev == "workspace":
        return Path(".")
    for name in FILES:
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dvc.api.read(name, rev=rev, mode="rb"))
    return into


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1))


def clean_by_prompt(judged: list[dict[str, Any]], condition: str) -> dict[int, list[bool]]:
    """Each prompt's clean flags of one condition, in sample order."""
    out: dict[int, list[bool]] = {}
    for r in sorted(judged, key=lambda r: (r["row"], r["sample"])):
        if r["condition"] == condition:
            out.setdefault(r["row"], []).append(bool(r["clean"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("unfiltered")
    ap.add_argument("filtered")
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resamples", type=int, default=100000)
    ap.add_argument("--show", type=int, default=0, help="steered samples of both runs, to read")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        revs = (args.unfiltered, args.filtered)
        runs = [fetch(rev, Path(tmp) / str(i)) for i, rev in enumerate(revs)]
        report(runs, args)


def positive_train(run: Path) -> list[dict[str, Any]]:
    """The run's training examples of its positive kind (``prepare.kinds[0]``)."""
    examples = read_parquet(run / "data/prepare/examples.parquet")
    positive = examples[0]["kind"]  # prepare writes the positive kind first
    return [e for e in examples if e["split"] == "train" and e["kind"] == positive]


def compare_vectors(
    runs: list[Path], vectors: list[torch.Tensor], cell: dict[str, Any], args: argparse.Namespace
) -> None:
    """The two vectors' cosine, and the cosine that random subsets of the size the filter left
    reach against the unfiltered vector (the negative kind's mean is the same in both runs)."""
    layer, position = cell["layer"], cell["position"]
    by_layer = [cosine(a[position], b[position]) for a, b in zip(*vectors, strict=True)]
    print(
        f"\nvector cosine, filtered against unfiltered, at layer {layer} position {position}: "
        f"{by_layer[layer]:.4f}; norms {vectors[0][layer, position].norm():.2f} and "
        f"{vectors[1][layer, position].norm():.2f}; at that position over layers 1-"
        f"{len(by_layer) - 1}: min {min(by_layer[1:]):.4f}, median "
        f"{float(np.median(by_layer[1:])):.4f}"
    )
    _, meta = read_tensors(runs[0] / "data/vectors/vectors.safetensors")
    pos, _ = read_tensors(runs[0] / f"data/activations/{meta['positive']}.safetensors")
    neg, _ = read_tensors(runs[0] / f"data/activations/{meta['negative']}.safetensors")
    rows = pos["resid_pre"][:, layer, position].double()
    negative_mean = neg["resid_pre"][:, layer, position].double().mean(0)
    full = rows.mean(0) - negative_mean
    m = len(positive_train(runs[1]))
    gen = torch.Generator().manual_seed(args.seed)
    draws = torch.tensor(
        [
            cosine(full, rows[torch.randperm(len(rows), generator=gen)[:m]].mean(0) - negative_mean)
            for _ in range(args.draws)
        ]
    )
    q = torch.quantile(draws, torch.tensor([0.025, 0.5, 0.975], dtype=draws.dtype)).tolist()
    above = float((draws > by_layer[layer]).double().mean())
    print(
        f"random subsets of {m} of the unfiltered run's {len(rows)} steps ({args.draws} draws): "
        f"cosine median {q[1]:.4f}, 95% of draws {q[0]:.4f} - {q[2]:.4f}; "
        f"{above:.1%} of them are closer to the unfiltered vector than the filtered one"
    )


def report(runs: list[Path], args: argparse.Namespace) -> None:
    stability = {
        (r["row"], r["step"]): r["stability"]
        for r in read_parquet(runs[0] / "data/stability/stability.parquet")
    }
    vectors, cells, judged = [], [], []
    for name, run in zip(("unfiltered", "filtered"), runs, strict=True):
        train = positive_train(run)
        shares = [stability.get((e["row"], e["step"]), float("nan")) for e in train]
        vec, meta = read_tensors(run / "data/vectors/vectors.safetensors")
        cell = read_json(run / "data/report/metrics.json")["cell"]
        print(
            f"{name}: {len(train)} {meta['positive']} training steps (vectors of "
            f"{meta['counts']}), "
            f"mean stability {np.nanmean(shares):.3f}, {sum(s >= 0.5 for s in shares)} at least "
            f"1/2; steer's cell {cell}"
        )
        vectors.append(vec["vectors"])
        cells.append(cell)
        judged.append(read_parquet(run / "data/steer/judged.parquet"))

    for cell in {(c["layer"], c["position"]): c for c in cells}.values():
        compare_vectors(runs, vectors, cell, args)
    print("\nclean rates on the prompts both runs steered")
    head = (
        "condition | unfiltered clean | filtered clean | filtered - unfiltered (95% over prompts)"
    )
    print(f"\n| {head} | sign-flip p |")
    print("|---|---|---|---|---|")
    conditions = sorted({r["condition"] for r in judged[0]} & {r["condition"] for r in judged[1]})
    for condition in conditions:
        a, b = clean_by_prompt(judged[0], condition), clean_by_prompt(judged[1], condition)
        # steer leaves out the sweep's prompts only when it chose its cell from the sweep
        prompts = sorted(a.keys() & b.keys())
        a, b = {p: a[p] for p in prompts}, {p: b[p] for p in prompts}
        diffs = [float(np.mean(b[p]) - np.mean(a[p])) for p in prompts]
        rates = []
        for flags in (a, b):
            k, n = sum(sum(f) for f in flags.values()), sum(len(f) for f in flags.values())
            lo, hi = wilson_interval(k, n)
            rates.append(f"{k}/{n} ({lo:.2f} - {hi:.2f})")
        if any(diffs):
            lo, hi = cluster_ci(mean_statistic, [diffs], seed=args.seed, n_resamples=args.resamples)
            p = sign_flip_p(diffs, seed=args.seed, n_resamples=args.resamples)
            diff = f"{np.mean(diffs):+.3f} ({lo:+.3f} to {hi:+.3f})"
        else:
            diff, p = "0 (the same samples)", 1.0
        print(f"| {condition} | {rates[0]} | {rates[1]} | {diff} | {p:.3g} |")
    steered = [
        {(r["row"], r["sample"]): r for r in j if r["condition"] == "steered"} for j in judged
    ]
    for key in sorted(steered[0].keys() & steered[1].keys())[: args.show]:
        print(f"\nprompt {key[0]} sample {key[1]}")
        for name, r in (("unfiltered", steered[0][key]), ("filtered", steered[1][key])):
            print(f"  {name} ({'clean' if r['clean'] else 'not clean'}): {r['text']!r}")


if __name__ == "__main__":
    main()
