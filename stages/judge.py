"""Stage judge (foreach: sweep, steer): classify each sample as 1 concluding, 2 verifying, 3 other.

    dvc repro judge@sweep
    paths from dvc.yaml's cmd: --generations --judged --stats
    reads `judge`

Writes the same rows with ``category`` (null where the judge gave no usable answer) and
``judge``, and what the judge did (requests sent, cache hits, tokens, unjudged) as metrics.
With ``judge.backend: anthropic`` this needs ANTHROPIC_API_KEY; see docs/judge.md.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.judge import JudgeParams, make_judge
from steerpipe.storage import read_parquet, write_json, write_parquet

INPUTS = ("generations",)
OUTPUTS = ("judged", "stats")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    judge = make_judge(load(JudgeParams))
    rows = read_parquet(paths["generations"])
    categories = judge.classify([r["text"] for r in rows])
    for row, category in zip(rows, categories, strict=True):
        row["category"] = category
        row["judge"] = judge.name
    write_parquet(rows, paths["judged"])
    write_json({"backend": judge.name, **judge.stats}, paths["stats"])
    print(f"judged {len(rows)} samples of {paths['generations']} with {judge.name}")


if __name__ == "__main__":
    run_stage(main)
