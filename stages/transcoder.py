"""Stage transcoder: train a small transcoder for each layer in ``transcoder.layers``.

    dvc repro transcoder
    paths from dvc.yaml's cmd: --weights --metrics
    reads `model` and `transcoder`

No pretrained transcoder exists for the packaged SmolLM2, so this learns one per layer from
the model's own MLP inputs and outputs over packaged text (questions of several reasoning-gym
tasks, in each of `transcoder.text_forms`: under the chat template, and as raw text like the
trace prompts), with an L1 penalty. Held-out texts measure it.
Outputs: ``<weights>/layer_<L>.safetensors`` (weights, log10 firing frequency of each feature,
config in metadata) and metrics (per layer: fraction of variance explained, L0, dead fraction,
next-token loss with and without the replacement).
"""

from __future__ import annotations

import torch

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.models import ModelParams, load_from_params, n_layers, resolve_layers
from steerpipe.storage import write_json
from steerpipe.transcoders.fidelity import collect_mlp_io, evaluate, next_token_losses
from steerpipe.transcoders.training import (
    TranscoderParams,
    log_frequency,
    train_transcoder,
    training_texts,
)
from steerpipe.transcoders.transcoder import save_transcoder

INPUTS: tuple[str, ...] = ()
OUTPUTS = ("weights", "metrics")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(TranscoderParams)
    model_params = load(ModelParams)
    model, tok = load_from_params(model_params)
    layers = resolve_layers(p.layers, n_layers(model), "transcoder.layers")
    train, held = training_texts(tok, p)
    pad = int(tok.pad_token_id)
    budget = p.token_budget
    metrics: dict[str, object] = {
        "train_tokens": sum(map(len, train)),
        "heldout_tokens": sum(map(len, held)),
    }
    trained = {}
    for layer in layers:
        x, y = collect_mlp_io(model, train, layer, token_budget=budget, pad_id=pad)
        tc = train_transcoder(
            x,
            y,
            layer=layer,
            d_sae=p.d_sae,
            l1=p.l1,
            lr=p.lr,
            steps=p.steps,
            batch_size=p.batch_size,
            seed=p.seed,
        )
        tc.log_frequency = log_frequency(tc, x)
        tc.meta = {
            "model": model_params.name,
            "d_sae": tc.d_sae,
            "l1": p.l1,
            "trained_tokens": int(x.shape[0]),
        }
        trained[layer] = tc
    # the plain model and each replacement, sharing each batch's layers below the transcoder's;
    # the plain run also gives the held-out MLP inputs and outputs
    held_io: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {
        k: ([], []) for k in trained
    }
    base_loss, *replaced = next_token_losses(
        model, held, [None, *trained.values()], token_budget=budget, pad_id=pad, mlp_io=held_io
    )
    metrics["next_token_loss"] = base_loss
    for (layer, tc), with_tc in zip(trained.items(), replaced, strict=True):
        hx, hy = (torch.cat(parts) for parts in held_io[layer])
        stats = evaluate(tc, hx, hy)
        stats.update({"next_token_loss_replaced": with_tc, "loss_increase": with_tc - base_loss})
        metrics[f"layer_{layer}"] = stats
        print(layer, stats)
    for layer, tc in trained.items():
        save_transcoder(tc, paths["weights"] / f"layer_{layer}.safetensors")
    write_json(metrics, paths["metrics"])


if __name__ == "__main__":
    run_stage(main)
