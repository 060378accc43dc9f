"""Stage report: concluding rate with and without the vector, and the sweep heat map.

    dvc repro report
    paths from dvc.yaml's cmd: --steer --sweep --scores --metrics --table --figure
                               --dose_table --dose_figure
    reads params.yaml section `stats`

Outputs: metrics, a table (a DVC plot: per layer and position, the judged concluding rate
and the logprob score of ``sweep_logprob``) and both as heat maps, with the rank correlation of
the two metrics over the grid in the metrics; the dose-response (the concluding rate against
the coefficient: control at 0, the negated vector, steered and the doses of
``steer.coefficients``) as a table (a DVC plot) and a figure, with intervals over prompts.
The metrics hold two analyses (``stats``; ``steerpipe/results/report.py``):
- per sample, as the original: rates with 95% Wilson intervals, counts per category, and a
  two-sided Fisher exact p-value, as if every sample were independent;
- per prompt (``prompt_level``): the samples of one prompt are correlated, so the intervals
  come from a bootstrap over prompts, and the test is a sign-flip permutation test of each
  prompt's steered minus control rate (both conditions run on the same prompts).
The controls (``controls``: the negated vector, random directions of its norm) get the same
comparison with control, each under its own name.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.results.report import plot_concluding_dose, plot_sweep, report_metrics
from steerpipe.stats import StatsParams
from steerpipe.storage import read_parquet, write_json

INPUTS = ("steer", "sweep", "scores")
OUTPUTS = ("metrics", "table", "figure", "dose_table", "dose_figure")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    steer = read_parquet(paths["steer"])
    sweep = read_parquet(paths["sweep"])
    scored = read_parquet(paths["scores"])
    metrics = report_metrics(steer, sweep, scored, load(StatsParams))
    write_json(metrics, paths["metrics"])
    first = steer[0]
    plot_concluding_dose(
        metrics["dose_response"],
        first["scale"],
        first["layer"],
        paths["dose_table"],
        paths["dose_figure"],
    )
    plot_sweep(sweep, scored, metrics, paths["table"], paths["figure"])
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
