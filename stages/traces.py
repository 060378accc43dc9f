"""Stage traces: transcoder features over greedy generation, for each prompt style.

    dvc repro traces
    paths from dvc.yaml's cmd: --questions --layers --traces --metrics
    reads `model` and `traces`

`traces.transcoders` is a local folder or a hub repo id (HF cache first); each layer's
transcoder is read at the hook point its format names (`traces.input_hook` overrides it) and
placed on the model one layer at a time. A fidelity gate comes first: on the first
`traces.fidelity_tokens` tokens of the stage's own prompts, each transcoder must explain at
least `traces.min_fve` of its MLP output's variance (null: measure only), or the stage stops
naming the file and the hook point it read; a transcoder read at the wrong point fails here.
Then, for every trace question and style in `traces.templates` (basic, 0shot, fewshot), the
model generates `traces.n_steps` tokens greedily (KV cache, left padding) and the features are
recorded at the last real token of every step.
Outputs: ``<layers>/layer_<L>.safetensors`` (per style, one sparse row per question and step,
plus `<style>.steps`: the number of steps of each question), the prompts and generations, and
metrics (the gate's measurements: FVE, L0, next-token loss with the MLP replaced; mean steps
and active features).
"""

from __future__ import annotations

from typing import Any

import torch

from steerpipe.config import load, run_stage, stage_args
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.storage import read_parquet, write_json, write_parquet, write_tensors
from steerpipe.transcoders.fidelity import gate_sample, gated
from steerpipe.transcoders.sets import placed_layers
from steerpipe.transcoders.traces import TracesParams, trace_features
from steerpipe.transcoders.yesno import prompt_ids, render

INPUTS = ("questions",)
OUTPUTS = ("layers", "traces", "metrics")


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(TracesParams)
    model_params = load(ModelParams)
    templates = p.templates
    questions = read_parquet(paths["questions"])
    model, tok = load_from_params(model_params)
    texts = {s: [render(t, q) for q in questions] for s, t in templates.items()}
    chat = p.chat_template
    prompts = {s: [prompt_ids(tok, x, chat_template=chat) for x in xs] for s, xs in texts.items()}
    sample = gate_sample(prompts, p.fidelity_tokens)
    pad = int(tok.pad_token_id)
    placed = placed_layers(p.transcoders, p.file, p.layers, model, input_hook=p.input_hook)
    transcoders, gate = gated(model, placed, sample, pad_id=pad, min_fve=p.min_fve)
    metrics: dict[str, Any] = {"fidelity": gate}
    tensors: dict[int, dict[str, torch.Tensor]] = {layer: {} for layer in transcoders}
    records = []
    for style in templates:
        print(f"{style}: {len(prompts[style])} prompts, {p.n_steps} steps")
        traces = trace_features(
            model,
            prompts[style],
            list(transcoders.values()),
            n_steps=p.n_steps,
            batch_size=p.batch_size,
            pad_id=pad,
        )
        steps = torch.tensor(traces.steps)
        metrics[style] = {"mean_steps": float(steps.float().mean())}
        for layer, rows in traces.features.items():
            tensors[layer].update(rows.tensors(style))
            tensors[layer][f"{style}.steps"] = steps
            metrics[style][f"layer_{layer}_mean_active"] = len(rows.values) / max(rows.n_rows, 1)
        done = zip(questions, texts[style], traces.tokens, traces.steps, strict=True)
        for q, text, out, n in done:
            generation = str(tok.decode(out, skip_special_tokens=True))
            record = {"style": style, "id": q["id"], "prompt": text, "steps": n}
            records.append({**record, "generation": generation})
    for layer, tc in transcoders.items():
        meta = {
            "model": model_params.name,
            "layer": layer,
            "d_sae": tc.d_sae,
            "input_hook": tc.input_hook,
            "styles": list(templates),
            "question_ids": [q["id"] for q in questions],
            "n_steps": p.n_steps,
        }
        write_tensors(tensors[layer], paths["layers"] / f"layer_{layer}.safetensors", meta)
    write_parquet(records, paths["traces"])
    write_json(metrics, paths["metrics"])


if __name__ == "__main__":
    run_stage(main)
