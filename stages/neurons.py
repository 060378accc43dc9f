"""Stage neurons: alive, reasoning and memory feature masks from the traces.

    dvc repro neurons
    paths from dvc.yaml's cmd: --traces --masks --metrics
    reads `neurons`, `traces.transcoders/file/layers`

A feature is alive if its log10 firing frequency is above `neurons.alive_log10_frequency`: the
frequency the transcoder file ships (transcoder_circuits, SAELens, ours), or, for formats that
ship none (circuit-tracer, sparsify), the frequency over all trace steps. It is a reasoning
neuron if it is alive and its mean activation over all trace steps rises by more than
`neurons.reasoning_threshold` from the `neurons.baseline` style to any other style; a memory
neuron if alive and not reasoning.
Outputs: ``<masks>/layer_<L>.safetensors`` (the three boolean masks, the mean activation per
style, and ``mean.all`` over every trace step of every style, which neuron_eval's matched
control matches) and metrics (counts per layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from steerpipe.config import StageError, load, run_stage, stage_args
from steerpipe.storage import read_tensors, write_json, write_tensors
from steerpipe.transcoders.neurons import SparseRows, neuron_masks
from steerpipe.transcoders.sets import read_log_frequency, resolve_source
from steerpipe.transcoders.traces import TracesParams

INPUTS = ("traces",)
OUTPUTS = ("masks", "metrics")


@dataclass(frozen=True)
class NeuronsParams:
    SECTION: ClassVar[str] = "neurons"
    baseline: str  # reasoning neurons rise from this prompt style to another
    alive_log10_frequency: float
    reasoning_threshold: float


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(NeuronsParams)
    t = load(TracesParams)
    folder = resolve_source(t.transcoders, t.file, t.layers)
    metrics = {}
    for layer in t.layers:
        tensors, meta = read_tensors(paths["traces"] / f"layer_{layer}.safetensors")
        if p.baseline not in meta["styles"]:
            raise StageError(f"neurons.baseline {p.baseline!r} is not one of {meta['styles']}")
        d_sae = int(meta["d_sae"])
        rows = {s: SparseRows.from_tensors(tensors, s, d_sae) for s in meta["styles"]}
        means = {style: r.column_mean() for style, r in rows.items()}
        log_frequency = read_log_frequency(folder, t.file, layer)
        frequency_from = "transcoder"
        if log_frequency is None:
            log_frequency = SparseRows.cat(list(rows.values()), d_sae).log_frequency()
            frequency_from = "traces"
        masks = neuron_masks(
            log_frequency,
            means,
            baseline=p.baseline,
            alive_log10_frequency=p.alive_log10_frequency,
            reasoning_threshold=p.reasoning_threshold,
        )
        out = {**masks, **{f"mean.{style}": m for style, m in means.items()}}
        out["mean.all"] = SparseRows.cat(list(rows.values()), d_sae).column_mean()
        meta = {**meta, "baseline": p.baseline, "frequency_from": frequency_from}
        write_tensors(out, paths["masks"] / f"layer_{layer}.safetensors", meta)
        metrics[f"layer_{layer}"] = {k: int(v.sum()) for k, v in masks.items()} | {
            "features": d_sae,
            "frequency_from": frequency_from,
        }
    write_json(metrics, paths["metrics"])
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
