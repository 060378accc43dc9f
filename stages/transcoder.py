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

import random
from dataclasses import dataclass
from typing import ClassVar, Literal

from steerpipe.config import check, load, run_stage, stage_args
from steerpipe.models import ModelParams, load_from_params, n_layers, resolve_layers
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

INPUTS: tuple[str, ...] = ()
OUTPUTS = ("weights", "metrics")


@dataclass(frozen=True)
class TranscoderParams:
    SECTION: ClassVar[str] = "transcoder"
    layers: Literal["all"] | list[int]
    tasks: list[str]  # reasoning-gym tasks whose questions are the training text
    texts_per_task: int
    problem_seed: int  # which questions each task gives
    max_tokens: int  # per text
    text_forms: list[Literal["chat", "raw"]]
    heldout_fraction: float
    d_sae: int
    l1: float
    lr: float
    steps: int
    batch_size: int
    token_budget: int
    seed: int  # the text order and the training

    def __post_init__(self) -> None:
        key = "transcoder"
        check(bool(self.tasks), f"{key}.tasks", "a non-empty list of reasoning-gym tasks")
        check(self.texts_per_task >= 1, f"{key}.texts_per_task", "at least 1")
        check(self.max_tokens >= 2, f"{key}.max_tokens", "at least 2")
        check(bool(self.text_forms), f"{key}.text_forms", "a non-empty list of chat and raw")
        check(0 < self.heldout_fraction < 1, f"{key}.heldout_fraction", "in (0, 1)")
        for name in ("d_sae", "steps", "batch_size", "token_budget"):
            check(getattr(self, name) >= 1, f"{key}.{name}", "at least 1")
        check(self.l1 >= 0 and self.lr > 0, f"{key}.l1/lr", "l1 >= 0 and lr > 0")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(TranscoderParams)
    model_params = load(ModelParams)
    model, tok = load_from_params(model_params)
    layers = resolve_layers(p.layers, n_layers(model), "transcoder.layers")
    texts = [q for task in p.tasks for q in gym_problems(task, p.texts_per_task, p.problem_seed)]
    random.Random(p.seed).shuffle(texts)

    def encode(text: str) -> list[list[int]]:
        return [
            (chat_prompt_ids(tok, text) if form == "chat" else list(tok(text).input_ids))
            for form in p.text_forms
        ]

    n_held = max(1, int(len(texts) * p.heldout_fraction))
    cut = p.max_tokens
    train = [s[:cut] for t in texts[n_held:] for s in encode(t)]
    held = [s[:cut] for t in texts[:n_held] for s in encode(t)]
    pad = int(tok.pad_token_id)
    budget = p.token_budget
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
            d_sae=p.d_sae,
            l1=p.l1,
            lr=p.lr,
            steps=p.steps,
            batch_size=p.batch_size,
            seed=p.seed,
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
            "model": model_params.name,
            "d_sae": tc.d_sae,
            "l1": p.l1,
            "trained_tokens": int(x.shape[0]),
        }
        trained[layer] = tc
        print(layer, metrics[f"layer_{layer}"])
    for layer, tc in trained.items():
        save_transcoder(tc, paths["weights"] / f"layer_{layer}.safetensors")
    write_json(metrics, paths["metrics"])


if __name__ == "__main__":
    run_stage(main)
