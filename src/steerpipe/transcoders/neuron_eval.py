"""Experiment B's evaluation: held-out Yes/No answers with neuron sets scaled (``neuron_eval``).

- ``NeuronEvalParams`` (params.yaml ``neuron_eval``).
- ``conditions``: base (no hook), then per layer, neuron set and strength the features each
  scales: the reasoning neurons, as many memory neurons drawn at random (seeded; the original's
  control) and as many memory neurons with the same total mean activation over the traces
  (``neurons.matched_features``: the random draw, then swaps).
- ``generate_steered``: generation in which each row may scale its own feature set at its own
  layer by its own strength (``feature_hook``), so that every condition shares the batches.
- ``condition_kl``: each condition's KL on neutral text (``lm/divergence.py``), as experiment A
  measures its vectors': what else scaling the neurons changes.
- ``answer_margins``: the same rows teacher-forced (at the prompt, ``first_step_margins``
  reads the generation's first step instead): the log-probability margin of the right
  answer over the wrong one as the next token, a measure that moves before an answer flips;
  read directly after the prompt (``margin_at: prompt``, for ``basic``, which answers at
  once) or after the row's own generated reasoning, where its answer is read
  (``margin_at: answer``, ``answer_context``, for the styles that reason first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import check
from steerpipe.lm.chat import encode
from steerpipe.lm.divergence import hooked_kl
from steerpipe.lm.generation import generate
from steerpipe.lm.offsets import tokens_before
from steerpipe.lm.prefill import left_pad
from steerpipe.transcoders.cross_layer import NO_LAYER, scale_clt_features
from steerpipe.transcoders.neurons import matched_features
from steerpipe.transcoders.transcoder import Transcoder, scale_features
from steerpipe.transcoders.yesno import answer_start

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


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
    margin_at: Literal["prompt", "answer"]  # where the answer margin is read
    answer_cue: str  # margin_at answer: put after a generation that gives no answer

    def __post_init__(self) -> None:
        check(bool(self.strengths), "neuron_eval.strengths", "a non-empty list")
        check(self.max_new_tokens >= 1, "neuron_eval.max_new_tokens", "at least 1")
        check(self.batch_size >= 1, "neuron_eval.batch_size", "at least 1")
        check(self.match_tolerance >= 0, "neuron_eval.match_tolerance", "at least 0")


@dataclass(frozen=True)
class FeatureSteer:
    """Scale ``features`` (indices) of the transcoder at ``layer`` by ``strength``."""

    layer: int
    features: torch.Tensor
    strength: float


def conditions(
    masks: dict[int, dict[str, torch.Tensor]], strengths: list[float], seed: int, tolerance: float
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """base, then per layer (``masks``: the neurons stage's tensors of each layer), neuron set
    and strength: the condition's fields and the features it scales; and per layer how close
    the matched control came."""
    out: list[dict[str, Any]] = [
        {"condition": "base", "layer": None, "neurons": None, "strength": None}
    ]
    matches: dict[str, dict[str, Any]] = {}
    for layer, tensors in masks.items():
        reasoning = torch.nonzero(tensors["reasoning"]).flatten()
        memory = torch.nonzero(tensors["memory"]).flatten()
        gen = torch.Generator().manual_seed(seed + layer)
        control = memory[torch.randperm(len(memory), generator=gen)[: len(reasoning)]]
        if len(control) < len(reasoning):
            print(f"layer {layer}: only {len(control)} memory neurons for {len(reasoning)}")
        # the same seed: the matched draw starts from the random control's features
        matched, match = matched_features(
            tensors["mean.all"],
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


def condition_rows(
    conds: list[dict[str, Any]],
    questions: list[dict[str, Any]],
    prompts: list[list[int]],
    *,
    mode: str = "delta",
) -> tuple[list[dict[str, Any]], list[list[int]], list[FeatureSteer | None]]:
    """Every question under every condition, conditions in order: each row's record (without
    its answer yet), prompt and steering (None: unhooked). In ``delta`` mode a strength of 1
    adds exactly zero (``transcoder.scale_features``), so its rows are unhooked: the same
    tokens, margins and KL as base, which ``generate_steered`` computes once."""
    records, rows, steers = [], [], []
    for c in conds:
        steer = (
            None if c["layer"] is None else FeatureSteer(c["layer"], c["features"], c["strength"])
        )
        for q, prompt in zip(questions, prompts, strict=True):
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
            rows.append(prompt)
            identity = steer is not None and mode == "delta" and steer.strength == 1
            steers.append(None if identity else steer)
    return records, rows, steers


def feature_hook(
    steers: Sequence[FeatureSteer | None],
    transcoders: dict[int, Transcoder],
    model: PreTrainedModel,
    mode: str,
) -> Callable[[list[int]], AbstractContextManager[None]]:
    """A context manager for a batch of rows (their indices in ``steers``, in batch order):
    each row scales its own feature set at its own layer by its own strength."""

    @contextmanager
    def hook(rows: list[int]) -> Iterator[None]:
        scales: dict[int, torch.Tensor] = {}
        for j, i in enumerate(rows):
            s = steers[i]
            if s is None:
                continue
            if s.layer not in scales:
                scales[s.layer] = torch.ones(len(rows), transcoders[s.layer].d_sae)
            scales[s.layer][j, s.features.long()] = s.strength
        # replace writes only the rows that steer (the others keep the MLP's output); a
        # cross-layer transcoder's layers share one hook, so that replace writes each once
        batch = [steers[i] for i in rows]
        starts = torch.tensor([NO_LAYER if s is None else s.layer for s in batch])
        clt = {layer: sc for layer, sc in scales.items() if transcoders[layer].cross_layer}
        with ExitStack() as stack:
            for layer, scale in scales.items():
                if layer not in clt:
                    tc = transcoders[layer]
                    hook = scale_features(model, tc, scale, mode=mode, rows=starts == layer)
                    stack.enter_context(hook)
            if clt:
                whole = transcoders[next(iter(clt))].cross_layer
                assert whole is not None
                stack.enter_context(scale_clt_features(model, whole, clt, mode=mode, starts=starts))
            yield

    return hook


def hook_start(steer: FeatureSteer, transcoders: dict[int, Transcoder], mode: str) -> int:
    """The lowest layer a row's steering acts on."""
    whole = transcoders[steer.layer].cross_layer is not None
    return 0 if whole and mode == "replace" else steer.layer


def condition_kl(
    model: PreTrainedModel,
    texts: Sequence[Sequence[int]],
    steers: Sequence[FeatureSteer | None],
    transcoders: dict[int, Transcoder],
    *,
    mode: str = "delta",
    batch_size: int = 16,
) -> list[float]:
    """Each steer's mean KL(hooked || plain) per token of the next-token distribution on
    ``texts`` (None: the plain model, 0)."""
    starts = [None if s is None else hook_start(s, transcoders, mode) for s in steers]
    hook = feature_hook(steers, transcoders, model, mode)
    return hooked_kl(model, texts, starts, hook, batch_size=batch_size)


def generate_steered(
    model: PreTrainedModel,
    prompts: list[list[int]],
    steers: Sequence[FeatureSteer | None],
    transcoders: dict[int, Transcoder],
    *,
    mode: str = "delta",
    first_logits: dict[int, torch.Tensor] | None = None,
    watch: Sequence[int] = (),
    **generate_kwargs: Any,
) -> list[list[int]]:
    """``generate`` with each row's own feature steering (None: unhooked).

    With ``first_logits``, it receives each row's logits of the ``watch`` tokens at the first
    step, which are those of the next token after the prompt under the row's hook: the
    margin at the prompt (``answer_margins`` with no context) without a second pass. Greedy
    rows (``temperature`` 0) with the same prompt and the same steer (None, or one object)
    write the same tokens: each such set is computed once (neuron_eval's base row and the
    strength-1 rows of its question, ``condition_rows``)."""
    if len(steers) != len(prompts):
        raise ValueError(f"{len(steers)} steers for {len(prompts)} prompts")
    first_of: dict[tuple[tuple[int, ...], int], int] = {}
    greedy = generate_kwargs.get("temperature") == 0
    twin = [
        first_of.setdefault((tuple(p), id(s)), i) if greedy else i
        for i, (p, s) in enumerate(zip(prompts, steers, strict=True))
    ]
    todo = sorted(set(twin))  # the rows computed, in input order
    place = {i: k for k, i in enumerate(todo)}
    steers = [steers[i] for i in todo]
    if generate_kwargs.get("row_keys") is not None:
        generate_kwargs["row_keys"] = [generate_kwargs["row_keys"][i] for i in todo]
    hook = feature_hook(steers, transcoders, model, mode)
    # a row's hook acts from its layer up: rows of one question share the layers below; a
    # cross-layer transcoder's replace reads the features of every layer from the first
    layers = [None if s is None else hook_start(s, transcoders, mode) for s in steers]
    tokens = torch.tensor(list(watch), dtype=torch.long)
    watched: dict[int, torch.Tensor] = {}

    def record(rows: list[int], logits: torch.Tensor) -> None:
        values = logits[:, tokens.to(logits.device)].cpu()
        for j, k in enumerate(rows):
            watched[k] = values[j]

    outs = generate(
        model, [prompts[i] for i in todo], batch_hook=hook, hook_layers=layers,
        first_step=None if first_logits is None else record, **generate_kwargs,
    )  # fmt: skip
    if first_logits is not None:
        first_logits.update({i: watched[place[twin[i]]] for i in range(len(prompts))})
    return [list(outs[place[twin[i]]]) for i in range(len(prompts))]


def first_step_margins(
    first_logits: dict[int, torch.Tensor], answers: Sequence[bool]
) -> list[float]:
    """``answer_margins`` at the prompt from ``generate_steered``'s first-step logits of
    (yes, no): log p(right) - log p(wrong) is the difference of the two logits."""
    out = []
    for i, right in enumerate(answers):
        yes, no = (float(x) for x in first_logits[i])
        out.append(yes - no if right else no - yes)
    return out


def answer_context(tokenizer: Tokenizer, generated: list[int], cue: list[int]) -> list[int]:
    """The generated tokens before the answer ``parse_answer`` reads in them, where the
    answer margin of a style that reasons first is read; a generation that gives no answer is
    kept whole (less a closing special token) and followed by ``cue`` ("The answer is")."""
    special = set(tokenizer.all_special_ids)
    ids = list(generated)
    while ids and ids[-1] in special:
        ids.pop()
    text = str(tokenizer.decode(ids, skip_special_tokens=True))
    start = answer_start(text)
    if start is None:
        return ids + list(cue)
    return ids[: tokens_before(tokenizer, ids, text, start)]


def answer_margins(
    model: PreTrainedModel,
    prompts: list[list[int]],
    steers: Sequence[FeatureSteer | None],
    transcoders: dict[int, Transcoder],
    answers: Sequence[bool],
    *,
    yes_id: int,
    no_id: int,
    contexts: Sequence[list[int]] | None = None,
    mode: str = "delta",
    batch_size: int = 32,
    pad_id: int = 0,
) -> list[float]:
    """Per row, the log-probability margin of the right answer's token over the wrong one's
    (``yes_id`` / ``no_id``) as the next token after the prompt and the row's ``contexts``
    (its own reasoning, ``answer_context``; none: right after the prompt), under the row's
    feature steering, which also holds over the context, as it did when it was generated:
    log p(right) - log p(wrong), teacher-forced; positive when the model leans right. Rows
    are sorted by length and left-padded (with the positions a row has alone)."""
    if not len(steers) == len(prompts) == len(answers):
        raise ValueError(f"{len(prompts)} prompts, {len(steers)} steers, {len(answers)} answers")
    if contexts is not None:
        if len(contexts) != len(prompts):
            raise ValueError(f"{len(contexts)} contexts for {len(prompts)} prompts")
        prompts = [p + list(c) for p, c in zip(prompts, contexts, strict=True)]
    hook = feature_hook(steers, transcoders, model, mode)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    out = [0.0] * len(prompts)
    for k in range(0, len(order), batch_size):
        rows = order[k : k + batch_size]
        ids, mask = left_pad([prompts[i] for i in rows], pad_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad(), hook(rows):
            logits = model(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=positions.to(model.device),
                logits_to_keep=1,
            ).logits[:, -1]
        logp = torch.log_softmax(logits.double(), dim=-1)
        for j, i in enumerate(rows):
            yes, no = float(logp[j, yes_id]), float(logp[j, no_id])
            out[i] = yes - no if answers[i] else no - yes
    return out


def row_margins(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    p: NeuronEvalParams,
    prompts: list[list[int]],
    steers: Sequence[FeatureSteer | None],
    transcoders: dict[int, Transcoder],
    outs: list[list[int]],
    first: dict[int, torch.Tensor],
    answers: Sequence[bool],
    answer_ids: tuple[int, int],
) -> tuple[list[float], list[list[int]]]:
    """Each row's answer margin where ``p.margin_at`` reads it, and the generated tokens
    before it: at the prompt from the generation's first step (``first``), or after the row's
    own generation (``outs``) up to its answer (``answer_context``, teacher-forced)."""
    if p.margin_at == "prompt":
        return first_step_margins(first, answers), [[] for _ in outs]
    cue = encode(tokenizer, p.answer_cue)
    contexts = [answer_context(tokenizer, out, cue) for out in outs]
    margins = answer_margins(
        model, prompts, steers, transcoders, answers, yes_id=answer_ids[0], no_id=answer_ids[1],
        contexts=contexts, mode=p.mode, batch_size=p.batch_size,
        pad_id=int(tokenizer.pad_token_id),
    )  # fmt: skip
    return margins, contexts
