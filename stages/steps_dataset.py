"""Stage steps_dataset: the labelled reasoning-step data set (Parquet, the paper's schema).

    dvc repro steps_dataset
    paths from dvc.yaml's cmd: --steps --metrics
    reads params.yaml sections `model` and `steps`

``steps.source: generate`` (default) lets the model write its own reasoning on packaged
reasoning-gym problems and labels the steps by rule; any other value is a hub data set id or a
local Parquet file with the same schema, loaded with ``datasets``. ``steps.labeller:
anthropic`` labels the steps with Claude instead of the rules (Message Batches, cached).
Outputs: the data set and its metrics (counts per kind).
"""

from __future__ import annotations

from steerpipe.claude.step_labels import label_rows_with_claude
from steerpipe.config import load, run_stage, stage_args
from steerpipe.gym import gym_problems
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.steering.generated_steps import StepsParams, build_rows
from steerpipe.steering.labels import count_matches
from steerpipe.steering.steps import load_rows, steps_table
from steerpipe.storage import write_json, write_parquet

INPUTS: tuple[str, ...] = ()
OUTPUTS = ("steps", "metrics")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(StepsParams)
    if p.source == "generate":
        model, tok = load_from_params(load(ModelParams))
        rows, cut = build_rows(
            model,
            tok,
            gym_problems(p.task, p.n_problems, p.problem_seed),
            instruction=p.instruction,
            separator=p.separator,
            label_mid_step=p.label_mid_step,
            max_new_tokens=p.max_new_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed,
            batch_size=p.batch_size,
        )
    else:
        rows, cut = load_rows(p.source), None
    label_stats = label_rows_with_claude(rows, p.claude) if p.labeller == "anthropic" else None
    n_steps = sum(len(r["steps"]) for r in rows)
    n_verification = sum(len(r["verification_steps"]) for r in rows)
    n_conclusion = sum(len(r["conclusion_steps"]) for r in rows)
    metrics = {
        "problems": len(rows),
        "steps": n_steps,
        "conclusion_steps": n_conclusion,
        "verification_steps": n_verification,
        "other_steps": n_steps - n_conclusion - n_verification,
        "problems_with_conclusion": sum(bool(r["conclusion_steps"]) for r in rows),
        "problems_with_verification": sum(bool(r["verification_steps"]) for r in rows),
        "traces_cut_at_max_new_tokens": cut,  # their last, unfinished step is dropped
        # where the rule's patterns match each kind; with label_mid_step false, steps matched
        # only at a later line or sentence are not labelled (the rule labeller misses them)
        "rule_matches": count_matches([r["steps"] for r in rows]),
        "labeller": {
            "backend": p.labeller,
            "label_mid_step": p.label_mid_step,
            **(label_stats or {}),
        },
    }
    write_parquet(steps_table(rows, p.separator), paths["steps"])
    write_json(metrics, paths["metrics"])
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
