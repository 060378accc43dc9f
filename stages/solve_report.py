"""Stage solve_report: accuracy and length of full solutions against the steering coefficient.

    dvc repro solve_report
    paths from dvc.yaml's cmd: --problems --control --steered --scored --metrics
                               --dose_table --dose_figure --samples
    reads `model.name` (its tokenizer), `solve` (problems, generation), `quality` and `stats`

Each solution is scored (``steerpipe/steering/solutions.py``): its answer
(``steerpipe/steering/answers.py``; none readable counts as unparsable, and as wrong), right or
not by the task's verifier, its tokens, the tokens before its first conclusion-like step and
its verification-like steps (each line and sentence labelled by its opening, with the rule
labeller's patterns), and whether it is degenerate (``steerpipe/steering/quality.py``: a
solution that loops to the token limit is). Per condition (control at coefficient 0, then
``dose_<c>``): accuracy with a Wilson interval and one over problems (a bootstrap), the mean
lengths with intervals over problems; against control on the same problems and samples (paired:
the same noise), the accuracy difference with an interval over problems, a sign-flip test of
the per-problem differences and McNemar's exact test on the solutions, and the same for the
length (``steerpipe/results/solve_report.py``); and ``power``: how many solutions a condition
needs to detect control's accuracy moving 15 points either way, beside how many it has.
Outputs: the scored solutions, metrics, the dose-response table (a DVC plot) and its figure
(accuracy and length against coefficient), and ``samples.md``: ``stats.samples`` problems
drawn with ``stats.seed``, every condition's solutions beside control's.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.models import ModelParams, load_tokenizer
from steerpipe.results.samples import degenerate_mark, samples_markdown
from steerpipe.results.solve_report import accuracy_power, plot_solution_dose, solve_metrics
from steerpipe.stats import StatsParams
from steerpipe.steering.quality import QualityParams, judge_quality
from steerpipe.steering.solutions import SolveParams, checker, score
from steerpipe.storage import read_parquet, write_json, write_parquet

INPUTS = ("problems", "control", "steered")
OUTPUTS = ("scored", "metrics", "dose_table", "dose_figure", "samples")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    solving = load(SolveParams)
    tok = load_tokenizer(load(ModelParams).name)
    problems = {r["index"]: r for r in read_parquet(paths["problems"])}
    right = checker(solving.problems.source, solving.problems.task)
    quality, p = load(QualityParams), load(StatsParams)
    rows = []
    for r in read_parquet(paths["control"]) + read_parquet(paths["steered"]):
        measures = score(r, problems[r["problem"]], tok, right=right)
        measures |= judge_quality(r["text"], r["nll"], quality)
        rows.append({k: v for k, v in r.items() if k != "ids"} | measures)
    write_parquet(rows, paths["scored"])
    conditions = solve_metrics(rows, p)
    steered = next(r for r in rows if r["condition"].startswith("dose_"))
    metrics = {
        "problems": len(problems),
        "samples": solving.generation.n_samples,
        "max_new_tokens": solving.generation.max_new_tokens,
        "cell": {"layer": steered["layer"], "position": steered["position"]},
        "conditions": conditions,
        "power": accuracy_power(
            conditions["control"]["accuracy"]["rate"], conditions["control"]["accuracy"]["n"]
        ),
    }
    write_json(metrics, paths["metrics"])
    plot_solution_dose(conditions, paths["dose_table"], paths["dose_figure"])
    columns = [("coefficient", lambda r: r["coefficient"]), ("tokens", lambda r: r["n_tokens"])]
    columns += [("answer", lambda r: r["answer"]), ("right", lambda r: r["correct"])]
    columns += [("degenerate", degenerate_mark), ("nll", lambda r: r["nll"])]
    text = samples_markdown(
        rows,
        unit=lambda r: r["problem"],
        unit_name="problem",
        columns=columns,
        n=p.samples,
        seed=p.seed,
        title="Full solutions: each condition beside control, on the same problems",
    )
    paths["samples"].write_text(text)
    for name, c in sorted(conditions.items(), key=lambda kv: kv[1]["coefficient"]):
        a = c["accuracy"]
        print(
            f"{name}: {a['count']}/{a['n']} right, {c['mean_tokens']:.1f} tokens on average, "
            f"{c['degenerate']} degenerate"
        )


if __name__ == "__main__":
    run_stage(main)
