"""Stage neurons: alive, reasoning and memory feature masks from the traces.

    python stages/neurons.py              (reads `neurons` and `traces.transcoders/file/layers`)

A feature is alive if its log10 firing frequency (from the transcoder) is above
`neurons.alive_log10_frequency`; a reasoning neuron if it is alive and its mean activation over
all trace steps rises by more than `neurons.reasoning_threshold` from the `neurons.baseline`
style to any other style; a memory neuron if alive and not reasoning.
Outputs: data/neurons/layers/layer_<L>.safetensors (the three boolean masks and the mean activation
per style) and data/neurons/metrics.json (counts per layer).
"""

from __future__ import annotations

from steerpipe.config import StageError, load_params, run_stage
from steerpipe.neurons import SparseRows, neuron_masks
from steerpipe.storage import read_tensors, write_json, write_tensors
from steerpipe.transcoders import load_layers


def main() -> None:
    p = load_params("neurons")
    t = load_params("traces")
    transcoders = load_layers(t["transcoders"], t["file"], [int(x) for x in t["layers"]])
    metrics = {}
    for layer, tc in transcoders.items():
        if tc.log_frequency is None:
            raise StageError(
                f"the transcoder for layer {layer} has no log10 firing frequencies, which the "
                "alive mask needs (transcoder_circuits: *_log_feature_sparsity.pt beside the .pt)"
            )
        tensors, meta = read_tensors(f"data/traces/layers/layer_{layer}.safetensors")
        if p["baseline"] not in meta["styles"]:
            raise StageError(f"neurons.baseline {p['baseline']!r} is not one of {meta['styles']}")
        means = {
            style: SparseRows.from_tensors(tensors, style, tc.d_sae).column_mean()
            for style in meta["styles"]
        }
        masks = neuron_masks(
            tc.log_frequency,
            means,
            baseline=str(p["baseline"]),
            alive_log10_frequency=float(p["alive_log10_frequency"]),
            reasoning_threshold=float(p["reasoning_threshold"]),
        )
        out = {**masks, **{f"mean.{style}": m for style, m in means.items()}}
        meta = {**meta, "baseline": p["baseline"]}
        write_tensors(out, f"data/neurons/layers/layer_{layer}.safetensors", meta)
        metrics[f"layer_{layer}"] = {k: int(v.sum()) for k, v in masks.items()} | {
            "features": tc.d_sae
        }
    write_json(metrics, "data/neurons/metrics.json")
    print(metrics)


if __name__ == "__main__":
    run_stage(main)
