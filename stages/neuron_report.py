"""Stage neuron_report: accuracy against strength for reasoning and memory neurons.

    dvc repro neuron_report
    paths from dvc.yaml's cmd: --generations --metrics --table --figure
    reads params.yaml section `stats`

Outputs: metrics (per condition: accuracy with a 95% Wilson interval, the rate of answers with
no Yes/No, and how often the answer, or the text, differs from base's on the same question;
and, paired with base on the same questions, the accuracy difference with a bootstrap interval
over questions and McNemar's exact test), a table (a DVC plot: accuracy per strength, one line
per neuron set and layer, base as a flat line) and the same as a figure
(``steerpipe/results/neuron_report.py``).
"""

from __future__ import annotations

from steerpipe.config import load, run_stage, stage_args
from steerpipe.results.neuron_report import neuron_metrics, plot_accuracy
from steerpipe.stats import StatsParams
from steerpipe.storage import read_parquet, write_json

INPUTS = ("generations",)
OUTPUTS = ("metrics", "table", "figure")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    metrics = neuron_metrics(read_parquet(paths["generations"]), load(StatsParams))
    write_json(metrics, paths["metrics"])
    plot_accuracy(metrics, paths["table"], paths["figure"])
    print({k: v["accuracy"]["rate"] for k, v in metrics["conditions"].items()})


if __name__ == "__main__":
    run_stage(main)
