"""Stage traces: transcoder features over greedy generation, for each prompt style.

    python stages/traces.py               (reads `model` and `traces`)

For every trace question and every style in `traces.templates` (basic, 0shot, fewshot), the
model generates `traces.n_steps` tokens greedily (KV cache, left padding) and the features of
the transcoders at `traces.layers` are recorded at the last real token of every step.
Outputs: data/traces/layers/layer_<L>.safetensors (per style, one sparse row per question and step,
plus `<style>.steps`: the number of steps of each question), data/traces/traces.parquet (the
prompts and generations) and data/traces/metrics.json (mean steps and active features).
"""

from __future__ import annotations

import torch

from steerpipe.config import StageError, load_params, run_stage
from steerpipe.models import load_from_params
from steerpipe.neurons import trace_features
from steerpipe.storage import read_parquet, write_json, write_parquet, write_tensors
from steerpipe.transcoders import load_layers, place
from steerpipe.yesno import prompt_ids, render


def main() -> None:
    p = load_params("traces")
    model_params = load_params("model")
    templates: dict[str, str] = dict(p["templates"])
    if not templates:
        raise StageError("traces.templates: no prompt styles")
    questions = read_parquet("data/questions/trace.parquet")
    model, tok = load_from_params(model_params)
    transcoders = place(
        load_layers(p["transcoders"], p["file"], [int(x) for x in p["layers"]]), model
    )
    tensors: dict[int, dict[str, torch.Tensor]] = {layer: {} for layer in transcoders}
    records, metrics = [], {}
    for style, template in templates.items():
        texts = [render(template, q) for q in questions]
        prompts = [prompt_ids(tok, t, chat_template=bool(p["chat_template"])) for t in texts]
        print(f"{style}: {len(prompts)} prompts, {int(p['n_steps'])} steps")
        traces = trace_features(
            model,
            prompts,
            list(transcoders.values()),
            n_steps=int(p["n_steps"]),
            batch_size=int(p["batch_size"]),
            pad_id=int(tok.pad_token_id),
        )
        steps = torch.tensor(traces.steps)
        metrics[style] = {"mean_steps": float(steps.float().mean())}
        for layer, rows in traces.features.items():
            tensors[layer].update(rows.tensors(style))
            tensors[layer][f"{style}.steps"] = steps
            metrics[style][f"layer_{layer}_mean_active"] = len(rows.values) / max(rows.n_rows, 1)
        for q, text, out, n in zip(questions, texts, traces.tokens, traces.steps, strict=True):
            generation = str(tok.decode(out, skip_special_tokens=True))
            records.append(
                {
                    "style": style,
                    "id": q["id"],
                    "prompt": text,
                    "generation": generation,
                    "steps": n,
                }
            )
    for layer, tc in transcoders.items():
        meta = {
            "model": model_params["name"],
            "layer": layer,
            "d_sae": tc.d_sae,
            "styles": list(templates),
            "question_ids": [q["id"] for q in questions],
            "n_steps": int(p["n_steps"]),
        }
        write_tensors(tensors[layer], f"data/traces/layers/layer_{layer}.safetensors", meta)
    write_parquet(records, "data/traces/traces.parquet")
    write_json(metrics, "data/traces/metrics.json")


if __name__ == "__main__":
    run_stage(main)
