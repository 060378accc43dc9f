"""Stage neuron_eval: answers to held-out Yes/No questions with the neurons scaled.

    dvc repro neuron_eval
    paths from dvc.yaml's cmd: --questions --masks --generations --matched
    reads `model`, `traces`, `neuron_eval`

On the evaluation questions (disjoint from the trace questions), greedy generation under
`base` (no hook) and, at each traced layer and each strength in `neuron_eval.strengths`, with
the reasoning neurons scaled and two controls: as many memory neurons drawn at random (seeded;
the original's control), and as many memory neurons with the same total mean activation over
the traces within `neuron_eval.match_tolerance` (``matched``: the random draw, then swaps;
``steerpipe.neurons.matched_features``). All conditions share the batches, each row with its
own hook. Outputs: the text generated after the prompt, the parsed Yes/No answer (null when
there is none) and whether it is right, one row per question and condition; and per layer the
match achieved (metrics), also where the memory neurons cannot reach the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch

from steerpipe.config import StageError, check, load, run_stage, stage_args
from steerpipe.feature_tracing import FeatureSteer, generate_steered
from steerpipe.models import ModelParams, load_from_params
from steerpipe.neurons import TracesParams, matched_features
from steerpipe.storage import read_parquet, read_tensors, write_json, write_parquet
from steerpipe.transcoder_sets import placed_layers
from steerpipe.yesno import parse_answer, prompt_ids, render

INPUTS = ("questions", "masks")
OUTPUTS = ("generations", "matched")


@dataclass(frozen=True)
class NeuronEvalParams:
    SECTION: ClassVar[str] = "neuron_eval"
    style: str  # the prompt style (a key of traces.templates)
    strengths: list[float]
    mode: Literal["delta", "replace"]
    max_new_tokens: int
    batch_size: int
    seed: int  # which memory neurons form the controls
    match_tolerance: float  # relative: the matched control's total mean activation vs reasoning

    def __post_init__(self) -> None:
        check(bool(self.strengths), "neuron_eval.strengths", "a non-empty list")
        check(self.max_new_tokens >= 1, "neuron_eval.max_new_tokens", "at least 1")
        check(self.batch_size >= 1, "neuron_eval.batch_size", "at least 1")
        check(self.match_tolerance >= 0, "neuron_eval.match_tolerance", "at least 0")


def conditions(
    masks_dir: Path, layers: list[int], strengths: list[float], seed: int, tolerance: float
) -> tuple[list[dict], dict[str, dict]]:
    """base, then per layer, neuron set and strength: the features each scales; and per layer
    how close the matched control came."""
    out: list[dict] = [{"condition": "base", "layer": None, "neurons": None, "strength": None}]
    matches: dict[str, dict] = {}
    for layer in layers:
        masks, _ = read_tensors(masks_dir / f"layer_{layer}.safetensors")
        reasoning = torch.nonzero(masks["reasoning"]).flatten()
        memory = torch.nonzero(masks["memory"]).flatten()
        gen = torch.Generator().manual_seed(seed + layer)
        control = memory[torch.randperm(len(memory), generator=gen)[: len(reasoning)]]
        if len(control) < len(reasoning):
            print(f"layer {layer}: only {len(control)} memory neurons for {len(reasoning)}")
        # the same seed: the matched draw starts from the random control's features
        matched, match = matched_features(
            masks["mean.all"],
            reasoning,
            memory,
            generator=torch.Generator().manual_seed(seed + layer),
            tolerance=tolerance,
        )
        matches[f"layer_{layer}"] = match
        if not match["within_tolerance"]:
            print(
                f"layer {layer}: the matched control reaches {match['matched_total_mean']:.4g} "
                f"of the reasoning neurons' {match['target_total_mean']:.4g} total mean "
                f"activation (gap {match['relative_gap']:+.1%}, tolerance {tolerance:.1%})"
            )
        sets = (("reasoning", reasoning), ("memory", control.sort().values), ("matched", matched))
        for name, features in sets:
            for s in strengths:
                out.append(
                    {
                        "condition": f"{name}@{layer}x{s:g}",
                        "layer": layer,
                        "neurons": name,
                        "strength": s,
                        "features": features,
                    }
                )
    return out, matches


def main() -> None:
    paths = stage_args(INPUTS, OUTPUTS)
    p = load(NeuronEvalParams)
    t = load(TracesParams)
    if p.style not in t.templates:
        raise StageError(f"neuron_eval.style {p.style!r} is not in traces.templates")
    questions = read_parquet(paths["questions"])
    model, tok = load_from_params(load(ModelParams))
    placed = placed_layers(t.transcoders, t.file, t.layers, model, input_hook=t.input_hook)
    transcoders = {tc.layer: tc for tc in placed}
    conds, matches = conditions(paths["masks"], t.layers, p.strengths, p.seed, p.match_tolerance)
    write_json(matches, paths["matched"])
    texts = [render(t.templates[p.style], q) for q in questions]
    ids = [prompt_ids(tok, x, chat_template=t.chat_template) for x in texts]
    records, prompts, steers = [], [], []
    for c in conds:
        steer = (
            None if c["layer"] is None else FeatureSteer(c["layer"], c["features"], c["strength"])
        )
        for q, prompt in zip(questions, ids, strict=True):
            records.append(
                {
                    "id": q["id"],
                    "condition": c["condition"],
                    "layer": c["layer"],
                    "neurons": c["neurons"],
                    "strength": c["strength"],
                    "n_features": 0 if steer is None else len(steer.features),
                    "answer": q["answer"],
                }
            )
            prompts.append(prompt)
            steers.append(steer)
    print(f"{len(conds)} conditions x {len(questions)} questions")
    outs = generate_steered(
        model,
        prompts,
        steers,
        transcoders,
        mode=p.mode,
        max_new_tokens=p.max_new_tokens,
        temperature=0.0,  # greedy: top_p does nothing
        top_p=1.0,
        batch_size=p.batch_size,
        pad_id=int(tok.pad_token_id),
    )
    for rec, out in zip(records, outs, strict=True):
        rec["generation"] = str(tok.decode(out, skip_special_tokens=True))
        rec["parsed"] = parse_answer(rec["generation"])
        rec["correct"] = rec["parsed"] == rec["answer"]
    write_parquet(records, paths["generations"])


if __name__ == "__main__":
    run_stage(main)
