"""Stage side_effects: experiment B's Yes/No questions scored with and without experiment A's
vector, a task the vector was not made for.

    dvc repro side_effects
    paths from dvc.yaml's cmd: --vectors --sweep --scores --kl --questions --margins --metrics
    reads `model`, `steer`, `sweep`, `neuron_eval.style`, `traces` (templates, chat_template),
    `stats`

Each evaluation question of experiment B (``questions``' eval set) in ``neuron_eval.style``'s
prompt, scored as experiment B scores it: the answer margin log p(right) - log p(wrong) as the
next token after the prompt (``steerpipe/steering/side_effects.py``), plain and with steer's
vector at its cell and coefficient (the choice the steer stage makes) on every position. The
plain margins are experiment B's base condition's (``margin_at: prompt``). Output: one row per
question (``margin_plain``, ``margin_steered``), and metrics: the margin's change with a
bootstrap interval over questions and a sign-flip test, its mean on the Yes and on the No
questions apart (a shift toward one answer cancels in the mean of a balanced set), the
accuracy (margin above 0) of each and McNemar's test on the flips
(``steerpipe/results/neuron_report.py``'s pairing).
"""

from __future__ import annotations

from statistics import mean

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.hooks import Steer
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.results.neuron_report import paired_with_base
from steerpipe.stats import StatsParams
from steerpipe.steering.side_effects import steered_margins
from steerpipe.steering.steer import SteerParams, steer_vector
from steerpipe.steering.sweep import SweepParams
from steerpipe.storage import read_parquet, read_tensors, write_json, write_parquet
from steerpipe.transcoders.neuron_eval import NeuronEvalParams
from steerpipe.transcoders.traces import TracesParams
from steerpipe.transcoders.yesno import answer_token_ids, prompt_ids, render

INPUTS = ("vectors", "sweep", "scores", "kl", "questions")
OUTPUTS = ("margins", "metrics")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    steer_p = load(SteerParams)
    tensors, meta = read_tensors(paths["vectors"])
    layer, pos, coef, unit, _ = steer_vector(
        tensors,
        meta,
        layer=steer_p.layer,
        position=steer_p.position,
        coefficient=steer_p.coefficient,
        scale=steer_p.scale,
        sweep=load(SweepParams),
        judged=read_parquet(paths["sweep"]),
        scores=read_parquet(paths["scores"]),
        kl=read_parquet(paths["kl"]),
    )
    style = load(NeuronEvalParams).style
    t = load(TracesParams)
    questions = read_parquet(paths["questions"])
    model, tok = load_from_params(load(ModelParams))
    texts = [render(t.templates[style], q) for q in questions]
    prompts = [prompt_ids(tok, x, chat_template=t.chat_template) for x in texts]
    answers = [bool(q["answer"]) for q in questions]
    yes_id, no_id = answer_token_ids(tok)
    n, steer = len(questions), Steer(layer, coef * unit)
    margins = steered_margins(
        model, prompts * 2, answers * 2, [None] * n + [steer] * n,
        yes_id=yes_id, no_id=no_id, pad_id=int(tok.pad_token_id),
    )  # fmt: skip
    rows = [
        {"id": q["id"], "answer": q["answer"]}
        | {"margin_plain": round(margins[i], 4), "margin_steered": round(margins[n + i], 4)}
        for i, q in enumerate(questions)
    ]
    write_parquet(rows, paths["margins"])
    base = {r["id"]: {"correct": r["margin_plain"] > 0, "margin": r["margin_plain"]} for r in rows}
    steered = [{"id": r["id"], "correct": r["margin_steered"] > 0, "margin": r["margin_steered"]}
               for r in rows]  # fmt: skip
    metrics = {
        "cell": {"layer": layer, "position": pos, "coefficient": coef},
        "questions": n,
        "style": style,
        "accuracy_plain": sum(b["correct"] for b in base.values()) / n,
        "accuracy_steered": sum(r["correct"] for r in steered) / n,
        **paired_with_base(steered, base, load(StatsParams)),
        # a shift toward one answer cancels in the mean over a balanced set: per answer
        "margin_change_by_answer": {
            word: mean(r["margin_steered"] - r["margin_plain"] for r in rows if r["answer"] == a)
            for word, a in (("yes", True), ("no", False))
            if any(r["answer"] == a for r in rows)
        },
    }
    write_json(metrics, paths["metrics"])
    print(f"{n} questions: margin change {metrics['margin_change']}")


if __name__ == "__main__":
    run_stage(main)
