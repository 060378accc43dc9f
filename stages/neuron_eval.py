"""Stage neuron_eval: answers to held-out Yes/No questions with the neurons scaled.

    dvc repro neuron_eval
    paths from dvc.yaml's cmd: --questions --masks --generations --matched
    reads `model`, `traces`, `neuron_eval`, `kl`

On the evaluation questions (disjoint from the trace questions), greedy generation under
`base` (no hook) and, at each traced layer and each strength in `neuron_eval.strengths`, with
the reasoning neurons scaled and two controls: as many memory neurons drawn at random (seeded;
the original's control), and as many memory neurons with the same total mean activation over
the traces within `neuron_eval.match_tolerance` (``matched``;
``steerpipe/transcoders/neuron_eval.py``). All conditions share the batches, each row with its
own hook. Outputs: the text generated after the prompt, the parsed Yes/No answer (null when
there is none), whether it is right, and the answer margin: the log-probability of the right
answer's token over the wrong one's as the next token, under the same hook: right after the
prompt (`neuron_eval.margin_at: prompt`, read at the generation's first step) or after the
row's own generation up to its answer (`answer`, for the styles that reason first;
teacher-forced by `answer_margins`; `margin_context` says how many generated tokens came
before it), one row per question and condition, with the condition's KL on ``kl``'s neutral
text (``condition_kl``); and per layer the match achieved (metrics), also where the memory
neurons cannot reach the target.
"""

from __future__ import annotations

import torch

from steerpipe.config import StageError, load, run_stage, stage_args
from steerpipe.lm.divergence import KLParams, neutral_texts
from steerpipe.lm.models import ModelParams, load_from_params
from steerpipe.storage import read_parquet, read_tensors, write_json, write_parquet
from steerpipe.transcoders.neuron_eval import (
    NeuronEvalParams,
    condition_kl,
    condition_rows,
    conditions,
    generate_steered,
    row_margins,
)
from steerpipe.transcoders.sets import placed_layers
from steerpipe.transcoders.traces import TracesParams
from steerpipe.transcoders.yesno import answer_token_ids, parse_answer, prompt_ids, render

INPUTS = ("questions", "masks")
OUTPUTS = ("generations", "matched")


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
    masks = {
        layer: read_tensors(paths["masks"] / f"layer_{layer}.safetensors")[0] for layer in t.layers
    }
    conds, matches = conditions(masks, p.strengths, p.seed, p.match_tolerance)
    write_json(matches, paths["matched"])
    texts = [render(t.templates[p.style], q) for q in questions]
    ids = [prompt_ids(tok, x, chat_template=t.chat_template) for x in texts]
    records, prompts, steers = condition_rows(conds, questions, ids, mode=p.mode)
    print(f"{len(conds)} conditions x {len(questions)} questions")
    yes_id, no_id = answer_token_ids(tok)
    first: dict[int, torch.Tensor] = {}  # at the prompt, the margin is the first step's
    outs = generate_steered(
        model, prompts, steers, transcoders, mode=p.mode, watch=(yes_id, no_id),
        first_logits=first if p.margin_at == "prompt" else None,
        max_new_tokens=p.max_new_tokens, temperature=0.0, top_p=1.0,  # greedy
        batch_size=p.batch_size, pad_id=int(tok.pad_token_id),
    )  # fmt: skip
    margins, contexts = row_margins(
        model, tok, p, prompts, steers, transcoders, outs, first,
        [rec["answer"] for rec in records], (yes_id, no_id),
    )  # fmt: skip
    kl_p, n = load(KLParams), len(questions)
    kl = condition_kl(
        model, neutral_texts(tok, kl_p), steers[::n], transcoders, mode=p.mode,
        batch_size=kl_p.batch_size,
    )  # fmt: skip
    for k, (rec, out, margin, context) in enumerate(
        zip(records, outs, margins, contexts, strict=True)
    ):
        rec["kl"] = round(kl[k // n], 4)
        rec["generation"] = str(tok.decode(out, skip_special_tokens=True))
        rec["parsed"] = parse_answer(rec["generation"])
        rec["correct"] = rec["parsed"] == rec["answer"]
        rec["margin"] = round(margin, 4)
        rec["margin_context"] = len(context)
    write_parquet(records, paths["generations"])


if __name__ == "__main__":
    run_stage(main)
