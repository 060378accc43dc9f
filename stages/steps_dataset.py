"""Stage steps_dataset: the labelled reasoning-step data set (Parquet, the paper's schema).

    python stages/steps_dataset.py        (reads params.yaml sections `model` and `steps`)

``steps.source: generate`` (default) lets the model write its own reasoning on packaged
reasoning-gym problems and labels the steps by rule; any other value is a hub data set id or a
local Parquet file with the same schema, loaded with ``datasets``. ``steps.labeller:
anthropic`` labels the steps with Claude instead of the rules (Message Batches, cached).
Outputs: data/steps/steps.parquet, data/steps/metrics.json (counts per kind).
"""

from __future__ import annotations

import pyarrow as pa

from steerpipe.config import StageError, load_params, run_stage
from steerpipe.models import load_from_params
from steerpipe.steps import SCHEMA, build_rows, gym_problems, label_rows_with_claude, load_rows
from steerpipe.storage import write_json, write_parquet


def main() -> None:
    p = load_params("steps")
    if p["source"] == "generate":
        model, tok = load_from_params(load_params("model"))
        problems = gym_problems(p["task"], int(p["n_problems"]), int(p["problem_seed"]))
        rows = build_rows(
            model,
            tok,
            problems,
            instruction=p["instruction"],
            max_new_tokens=int(p["max_new_tokens"]),
            temperature=float(p["temperature"]),
            top_p=float(p["top_p"]),
            seed=int(p["seed"]),
            batch_size=int(p["batch_size"]),
        )
    else:
        rows = load_rows(str(p["source"]))
    labeller = p.get("labeller", "rule")
    if labeller not in ("rule", "anthropic"):
        raise StageError(f"steps.labeller must be 'rule' or 'anthropic', got {labeller!r}")
    label_stats = label_rows_with_claude(rows, p["claude"]) if labeller == "anthropic" else None
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
        "labeller": {"backend": labeller, **(label_stats or {})},
    }
    write_parquet(pa.Table.from_pylist(rows, schema=SCHEMA), "data/steps/steps.parquet")
    write_json(metrics, "data/steps/metrics.json")
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
