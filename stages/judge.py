"""Stage judge (foreach: sweep, steer): classify each sample as 1 concluding, 2 verifying, 3 other,
and say whether it is degenerate and whether it is clean.

    dvc repro judge@sweep
    paths from dvc.yaml's cmd: --generations --judged --stats
    reads `judge`, `quality`

Writes the same rows with ``category`` (null where the judge gave no usable answer),
``judge``, the text measures and ``degenerate`` of the degenerate rule
(``steerpipe/steering/quality.py``, thresholds in ``quality``; the ``nll`` came with the
samples), and ``clean``: concluding and not degenerate. The metrics say what the judge did
(requests sent, cache hits, tokens, unjudged) and how many samples were degenerate, and why.
A judge other than the rule judge is compared with it on the same samples
(``agreement_with_rule``: Cohen's kappa and the confusion counts, judge's rows by rule's).
With Claude's fluency ratings (``judge.fluency``), each row also gets ``fluency`` (0/1/2) and
``combined`` (AxBench's score), and the metrics the rule's agreement with them
(``fluency_agreement``: kappa of degenerate against a rating of 0).
With ``judge.backend: anthropic`` this needs ANTHROPIC_API_KEY; see docs/judge.md.
"""

from __future__ import annotations

from collections import Counter

from steerpipe.config import load, run_stage, stage_args
from steerpipe.steering.judge import (
    JudgeParams,
    RuleJudge,
    agreement,
    axbench_score,
    fluency_agreement,
    make_judge,
)
from steerpipe.steering.labels import CONCLUDING
from steerpipe.steering.quality import QualityParams, judge_quality
from steerpipe.storage import read_parquet, write_json, write_parquet

INPUTS = ("generations",)
OUTPUTS = ("judged", "stats")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    judge = make_judge(load(JudgeParams))
    quality = load(QualityParams)
    rows = read_parquet(paths["generations"])
    texts = [r["text"] for r in rows]
    categories = judge.classify(texts)
    reasons: Counter[str] = Counter()
    for row, category in zip(rows, categories, strict=True):
        row |= {"category": category, "judge": judge.name}
        row |= judge_quality(row["text"], row["nll"], quality)
        row["clean"] = category == CONCLUDING and not row["degenerate"]
        reasons.update(r for r in row["degenerate_reasons"].split(",") if r)
    stats = {"backend": judge.name, **judge.stats}
    stats["degenerate"] = sum(r["degenerate"] for r in rows)
    stats["degenerate_by_reason"] = dict(sorted(reasons.items()))
    stats["clean"] = sum(r["clean"] for r in rows)
    if judge.name != "rule":  # the rule judge is free: a second opinion on every sample
        stats["agreement_with_rule"] = agreement(categories, RuleJudge().classify(texts))
    if judge.fluency is not None:
        for row, rating in zip(rows, judge.fluency, strict=True):
            row["fluency"] = rating
            row["combined"] = axbench_score(row["category"] == CONCLUDING, rating)
        degenerate = [r["degenerate"] for r in rows]
        stats["fluency_agreement"] = fluency_agreement(degenerate, judge.fluency)
    write_parquet(rows, paths["judged"])
    write_json(stats, paths["stats"])
    print(f"judged {len(rows)} samples of {paths['generations']} with {judge.name}")


if __name__ == "__main__":
    run_stage(main)
