"""Stage report: clean, raw and degenerate concluding rates with and without the vector, the
sweep's heat maps, and samples to read.

    dvc repro report
    paths from dvc.yaml's cmd: --steer --sweep --scores --kl --metrics --table --figure
                               --dose_table --dose_figure --spread_table --spread_figure --samples
    reads params.yaml section `stats` and `sweep.coefficient_cells`

Three measures per condition (``steerpipe/results/report.py``): ``clean`` (concluding and not
degenerate: the headline), the raw concluding rate the original reported (at the top of the
metrics, as before), and ``degenerate`` (``steerpipe/steering/quality.py``). Each has two
analyses (``stats``):
- per sample, as the original: rates with 95% Wilson intervals and a two-sided Fisher exact
  p-value, as if every sample were independent;
- per prompt (``prompt_level``): the samples of one prompt are correlated, so the intervals
  come from a bootstrap over prompts, and the test is a sign-flip permutation test of each
  prompt's steered minus control rate (both conditions run on the same prompts).
The controls (``controls``: the negated vector, random directions of its norm), the doses and
the prompting baselines (``baselines``: instruction, prefill) get the same comparisons with
control, each with the share of prompts it moved up, left unchanged and moved down
(``prompt_level.moved``); steered is also compared with each baseline, paired by prompt
(``baselines.<name>.steered_against``). ``kl``: each vector's KL on neutral text.
Outputs: the metrics; the sweep as a table (a DVC plot: per layer, position and coefficient,
the three rates and the logprob score) and heat maps;
the dose-response (the three rates and the KL against the coefficient: control at 0, the
negated vector, steered and the doses of ``steer.coefficients``) as a table (a DVC plot) and a
figure; every condition's per-prompt clean-rate difference from control (``spread``); and
``samples.md``: ``stats.samples`` prompts drawn with ``stats.seed``, every condition's samples
beside control's, each marked concluding or not and degenerate or not.
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.results.report import plot_concluding_dose, plot_spread, report_metrics
from steerpipe.results.samples import degenerate_mark, samples_markdown
from steerpipe.results.sweep_report import plot_sweep
from steerpipe.stats import StatsParams
from steerpipe.steering.labels import CATEGORIES
from steerpipe.steering.sweep import SweepParams
from steerpipe.storage import read_parquet, write_json

INPUTS = ("steer", "sweep", "scores", "kl")
OUTPUTS = (
    "metrics",
    "table",
    "figure",
    "dose_table",
    "dose_figure",
    "spread_table",
    "spread_figure",
    "samples",
)


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    steer = read_parquet(paths["steer"])
    sweep = read_parquet(paths["sweep"])
    scored = read_parquet(paths["scores"])
    p = load(StatsParams)
    k = load(SweepParams).coefficient_cells
    kl = read_parquet(paths["kl"])
    metrics = report_metrics(steer, sweep, scored, p, coefficient_cells=k, sweep_kl=kl)
    write_json(metrics, paths["metrics"])
    first = steer[0]
    plot_concluding_dose(
        metrics["dose_response"],
        first["scale"],
        first["layer"],
        paths["dose_table"],
        paths["dose_figure"],
    )
    plot_spread(steer, "clean", paths["spread_table"], paths["spread_figure"])
    plot_sweep(sweep, scored, metrics, paths["table"], paths["figure"], kl)
    text = samples_markdown(
        steer,
        unit=lambda r: (r["row"], r["step"]),
        unit_name="prompt (row, step)",
        columns=[
            ("coefficient", lambda r: r["coefficient"]),
            ("judged", lambda r: CATEGORIES.get(r["category"], "unjudged")),
            ("degenerate", degenerate_mark),
            ("nll", lambda r: r["nll"]),
        ],
        n=p.samples,
        seed=p.seed,
        title="Steer's samples: each condition beside control, on the same prompts",
    )
    paths["samples"].write_text(text)
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
