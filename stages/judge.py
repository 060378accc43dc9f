"""Stage judge (foreach: sweep, steer): classify each sample as 1 concluding, 2 verifying, 3 other.

    dvc repro judge@sweep
    paths from dvc.yaml's cmd: --generations --judged --stats
    reads `judge`

Writes the same rows with ``category`` (null where the judge gave no usable answer) and
``judge``, and what the judge did (requests sent, cache hits, tokens, unjudged) as metrics.
A judge other than the rule judge is compared with it on the same samples
(``agreement_with_rule``: Cohen's kappa and the confusion counts, judge's rows by rule's).
With ``judge.backend: anthropic`` this needs ANTHROPIC_API_KEY; see docs/judge.md.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.steering.judge import JudgeParams, RuleJudge, agreement, make_judge
from steerpipe.storage import read_parquet, write_json, write_parquet

INPUTS = ("generations",)
OUTPUTS = ("judged", "stats")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    judge = make_judge(load(JudgeParams))
    rows = read_parquet(paths["generations"])
    texts = [r["text"] for r in rows]
    categories = judge.classify(texts)
    for row, category in zip(rows, categories, strict=True):
        row["category"] = category
        row["judge"] = judge.name
    stats = {"backend": judge.name, **judge.stats}
    if judge.name != "rule":  # the rule judge is free: a second opinion on every sample
        stats["agreement_with_rule"] = agreement(categories, RuleJudge().classify(texts))
    write_parquet(rows, paths["judged"])
    write_json(stats, paths["stats"])
    print(f"judged {len(rows)} samples of {paths['generations']} with {judge.name}")


if __name__ == "__main__":
    run_stage(main)
