"""Stage transcoder: train a small transcoder for each layer in ``transcoder.layers``.

    python stages/transcoder.py           (reads `model` and `transcoder`)

No pretrained transcoder exists for the packaged SmolLM2, so this learns one per layer from
the model's own MLP inputs and outputs over packaged text (questions of several reasoning-gym
tasks, in each of `transcoder.text_forms`: under the chat template, and as raw text like the
trace prompts), with an L1 penalty. Held-out texts measure it.
Outputs: data/transcoder/weights/layer_<L>.safetensors (weights, log10 firing frequency of
each feature, config in metadata) and data/transcoder/metrics.json (per layer: fraction of
variance explained, L0, dead fraction, next-token loss with and without the replacement).
"""

from __future__ import annotations

import random

from steerpipe.config import StageError, load_params, run_stage
from steerpipe.models import load_from_params, n_layers, resolve_layers
from steerpipe.prompts import chat_prompt_ids
from steerpipe.steps import gym_problems
from steerpipe.storage import write_json
from steerpipe.transcoder_training import (
    collect_mlp_io,
    evaluate,
    log_frequency,
    next_token_loss,
    train_transcoder,
)
from steerpipe.transcoders import save_transcoder


def main() -> None:
    p = load_params("transcoder")
    model_params = load_params("model")
    model, tok = load_from_params(model_params)
    layers = resolve_layers(p["layers"], n_layers(model), "transcoder.layers")
    texts = [q for task in p["tasks"] for q in gym_problems(task, int(p["texts_per_task"]), 7)]
    random.Random(int(p["seed"])).shuffle(texts)
    forms = list(p["text_forms"])
    if not forms or set(forms) - {"chat", "raw"}:
        raise StageError(f"transcoder.text_forms must be a list of chat and raw, got {forms}")

    def encode(text: str) -> list[list[int]]:
        return [
            (chat_prompt_ids(tok, text) if form == "chat" else list(tok(text).input_ids))
            for form in forms
        ]

    n_held = max(1, int(len(texts) * float(p["heldout_fraction"])))
    cut = int(p["max_tokens"])
    train = [s[:cut] for t in texts[n_held:] for s in encode(t)]
    held = [s[:cut] for t in texts[:n_held] for s in encode(t)]
    pad = int(tok.pad_token_id)
    budget = int(p["token_budget"])
    base_loss = next_token_loss(model, held, token_budget=budget, pad_id=pad)
    metrics: dict[str, object] = {
        "train_tokens": sum(map(len, train)),
        "heldout_tokens": sum(map(len, held)),
        "next_token_loss": base_loss,
    }
    trained = {}
    for layer in layers:
        x, y = collect_mlp_io(model, train, layer, token_budget=budget, pad_id=pad)
        tc = train_transcoder(
            x,
            y,
            layer=layer,
            d_sae=int(p["d_sae"]),
            l1=float(p["l1"]),
            lr=float(p["lr"]),
            steps=int(p["steps"]),
            batch_size=int(p["batch_size"]),
            seed=int(p["seed"]),
        )
        tc.log_frequency = log_frequency(tc, x)
        hx, hy = collect_mlp_io(model, held, layer, token_budget=budget, pad_id=pad)
        with_tc = next_token_loss(model, held, transcoder=tc, token_budget=budget, pad_id=pad)
        metrics[f"layer_{layer}"] = {
            **evaluate(tc, hx, hy),
            "next_token_loss_replaced": with_tc,
            "loss_increase": with_tc - base_loss,
        }
        tc.meta = {
            "model": model_params["name"],
            "d_sae": tc.d_sae,
            "l1": float(p["l1"]),
            "trained_tokens": int(x.shape[0]),
        }
        trained[layer] = tc
        print(layer, metrics[f"layer_{layer}"])
    for layer, tc in trained.items():
        save_transcoder(tc, f"data/transcoder/weights/layer_{layer}.safetensors")
    write_json(metrics, "data/transcoder/metrics.json")


if __name__ == "__main__":
    run_stage(main)
