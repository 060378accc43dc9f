"""Stage questions: the Yes/No questions of experiment B, split into trace and evaluation sets.

    dvc repro questions
    paths from dvc.yaml's cmd: --trace --eval --metrics
    reads `questions`

The default is reasoning-gym's packaged syllogism task; `questions.source: google/boolq` (or a
local Parquet file with BoolQ's columns question, passage, answer) switches to BoolQ. With
`questions.balanced` (the default) each set is half Yes and half No, taken in the source's
seeded order, so that a model that answers one word to everything scores 0.5. Outputs: the
trace and evaluation questions (disjoint; two files so that asking for more evaluation
questions leaves the cached traces alone) and metrics (counts and the share of Yes answers in
each set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from steerpipe.config import check, load, run_stage, stage_args
from steerpipe.storage import write_json, write_parquet
from steerpipe.transcoders.yesno import load_questions, split_questions

INPUTS: tuple[str, ...] = ()
OUTPUTS = ("trace", "eval", "metrics")


@dataclass(frozen=True)
class QuestionsParams:
    SECTION: ClassVar[str] = "questions"
    source: str  # syllogism | google/boolq | path/to.parquet
    split: str  # of a hub data set
    n_trace: int  # questions whose traces choose the neurons
    n_eval: int  # further questions for neuron_eval
    balanced: bool  # each set half Yes, half No: "always No" scores 0.5
    seed: int

    def __post_init__(self) -> None:
        check(self.n_trace >= 1, "questions.n_trace", "at least 1")
        check(self.n_eval >= 1, "questions.n_eval", "at least 1")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(QuestionsParams)
    n = p.n_trace + p.n_eval
    rows = load_questions(p.source, n, seed=p.seed, split=p.split, balanced=p.balanced)
    trace, evaluation = split_questions(rows, p.n_trace, p.n_eval, balanced=p.balanced)
    write_parquet(trace, paths["trace"])
    write_parquet(evaluation, paths["eval"])
    metrics = {
        name: {"n": len(part), "yes_rate": sum(r["answer"] for r in part) / max(len(part), 1)}
        for name, part in (("trace", trace), ("eval", evaluation))
    }
    write_json({"source": p.source, **metrics}, paths["metrics"])
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
