"""Stage questions: the Yes/No questions of experiment B, split into trace and evaluation sets.

    python stages/questions.py            (reads `questions`)

The default is reasoning-gym's packaged syllogism task; `questions.source: google/boolq` (or a
local Parquet file with BoolQ's columns question, passage, answer) switches to BoolQ.
Outputs: data/questions/trace.parquet and data/questions/eval.parquet (disjoint; two files so
that asking for more evaluation questions leaves the cached traces alone) and
data/questions/metrics.json (counts and the share of Yes answers in each set).
"""

from __future__ import annotations

from steerpipe.config import load_params, run_stage
from steerpipe.storage import write_json, write_parquet
from steerpipe.yesno import load_questions, split_questions


def main() -> None:
    p = load_params("questions")
    n_trace, n_eval = int(p["n_trace"]), int(p["n_eval"])
    rows = load_questions(
        str(p["source"]), n_trace + n_eval, seed=int(p["seed"]), split=str(p["split"])
    )
    trace, evaluation = split_questions(rows, n_trace, n_eval)
    write_parquet(trace, "data/questions/trace.parquet")
    write_parquet(evaluation, "data/questions/eval.parquet")
    metrics = {
        name: {"n": len(part), "yes_rate": sum(r["answer"] for r in part) / max(len(part), 1)}
        for name, part in (("trace", trace), ("eval", evaluation))
    }
    write_json({"source": p["source"], **metrics}, "data/questions/metrics.json")
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
