"""How well a transcoder stands in for its MLP, and the traces stage's gate on it.

``collect_mlp_io`` reads the MLP's input and output at a transcoder's hook points;
``evaluate`` gives on such pairs what a user of a transcoder wants to know: the fraction of the
output's variance explained (FVE), the mean number of active features (L0) and the dead
fraction; ``next_token_loss`` how much the next-token loss rises when the transcoder replaces
the MLP. ``fidelity`` measures these for any transcoder at its own hook points, and ``gated``
stops the traces stage when one explains too little: the gate against a transcoder read at the
wrong input convention.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from steerpipe.config import StageError
from steerpipe.lm.activations import StopForward, right_pad, token_batches
from steerpipe.lm.hooks import on_mlp, on_resid_pre
from steerpipe.lm.shared_layers import recording_inputs, starting_at
from steerpipe.transcoders.cross_layer import CrossLayerTranscoder, scale_clt_features
from steerpipe.transcoders.transcoder import Transcoder, steer_features

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


def collect_mlp_io(
    model: PreTrainedModel,
    sequences: list[list[int]],
    layer: int,
    *,
    input_hook: str = "mlp.hook_in",
    output_hook: str = "hook_mlp_out",
    token_budget: int = 4096,
    pad_id: int = 0,
    skip_first: bool = False,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs at ``input_hook``, outputs at ``output_hook``) of the MLP at ``layer`` for every
    real (non-pad) token, float32; ``skip_first`` leaves out each sequence's first token."""
    xs, ys = [], []
    keep: dict[str, torch.Tensor] = {}

    def stop(x: torch.Tensor, out: torch.Tensor) -> None:
        keep["x"], keep["y"] = x, out
        raise StopForward  # the layers after this one are not needed

    with on_mlp(model, layer, stop, input_hook=input_hook, output_hook=output_hook):
        batches = token_batches([len(s) for s in sequences], token_budget)
        for batch in tqdm(batches, desc=f"mlp io {layer}", disable=not progress):
            ids, mask = right_pad([sequences[i] for i in batch], pad_id)
            with torch.no_grad(), contextlib.suppress(StopForward):
                model.get_decoder()(
                    input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
                )
            real = mask.bool()
            if skip_first:
                real[:, 0] = False
            real = real.to(keep["x"].device)
            xs.append(keep["x"][real].float().cpu())
            ys.append(keep["y"][real].float().cpu())
    return torch.cat(xs), torch.cat(ys)


def evaluate(transcoder: Transcoder, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """FVE, L0 and dead fraction on (input, output) pairs, in the transcoder's device and
    dtype (a placed 65k-feature transcoder is not copied); sums in float32."""
    xt = x.to(transcoder.W_enc.device, transcoder.W_enc.dtype)
    f = transcoder.encode(xt)
    recon = transcoder.decode(f, xt).float().cpu()
    f = f.float().cpu()
    return {
        "fraction_variance_explained": variance_explained(recon, y),
        "l0": float((f != 0).float().sum(-1).mean()),
        "dead_fraction": float(((f != 0).sum(0) == 0).float().mean()),
    }


def variance_explained(recon: torch.Tensor, y: torch.Tensor) -> float:
    """1 - the residual's sum of squares over ``y``'s about its mean: each row's sum in
    float32, the rows' exactly (``math.fsum``). A whole tensor's ``sum()`` splits its terms
    among the threads, so its bits followed the thread count (the traces stage's gate FVE
    0.29598308 on one thread, 0.29598302 on two; ``steerpipe.repro`` runs stages on one);
    a row's sum is one thread's."""
    residual = math.fsum(((recon - y) ** 2).sum(-1).tolist())
    total = math.fsum(((y - y.mean(0)) ** 2).sum(-1).tolist())
    return 1 - residual / total


def next_token_loss(
    model: PreTrainedModel,
    sequences: list[list[int]],
    *,
    transcoder: Transcoder | None = None,
    token_budget: int = 4096,
    pad_id: int = 0,
) -> float:
    """Mean next-token cross-entropy over real tokens; with ``transcoder``, it replaces the MLP."""
    losses = next_token_losses(
        model, sequences, [transcoder], token_budget=token_budget, pad_id=pad_id
    )
    return losses[0]


def next_token_losses(
    model: PreTrainedModel,
    sequences: list[list[int]],
    transcoders: Sequence[Transcoder | None],
    *,
    token_budget: int = 4096,
    pad_id: int = 0,
    mlp_io: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] | None = None,
) -> list[float]:
    """``next_token_loss`` with each of ``transcoders`` (None: the plain model). Each batch runs
    the plain model once; a transcoder's run starts at its layer from the plain run's input
    there (``shared_layers.starting_at``), the same bits as a run through every layer.
    ``mlp_io[layer]``, where given, gets the plain run's MLP inputs and outputs at ``layer``,
    batch by batch: ``collect_mlp_io``'s, the same bits (its batches are these), without a
    second run of the layers below (the transcoder stage's held-out texts)."""
    totals = [0.0] * len(transcoders)
    count = 0
    layers = {tc.layer for tc in transcoders if tc is not None}
    no_features = torch.zeros(0, dtype=torch.long)
    plain_needed = any(tc is None for tc in transcoders)
    if mlp_io and not plain_needed:
        raise ValueError("mlp_io is read from the plain run: include None in transcoders")
    io: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def reader(layer: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
        return lambda x, out: io.__setitem__(layer, (x, out))

    def stop(hidden: torch.Tensor) -> None:
        raise StopForward  # without the plain loss, nothing above the top input is needed

    for batch in token_batches([len(s) for s in sequences], token_budget):
        ids, mask = right_pad([sequences[i] for i in batch], pad_id)
        ids, mask = ids.to(model.device), mask.to(model.device)
        plain = None
        with torch.no_grad(), recording_inputs(model, layers) as seen:
            if plain_needed:
                with contextlib.ExitStack() as recorders:
                    for layer in mlp_io or {}:
                        recorders.enter_context(on_mlp(model, layer, reader(layer)))
                    plain = model(input_ids=ids, attention_mask=mask).logits
            else:
                with on_resid_pre(model, {max(layers): stop}), contextlib.suppress(StopForward):
                    model.get_decoder()(input_ids=ids, attention_mask=mask)
        real = mask.bool()
        for layer, (xs, ys) in (mlp_io or {}).items():
            xs.append(io[layer][0][real].float().cpu())
            ys.append(io[layer][1][real].float().cpu())
        valid = mask[:, 1:].bool()
        targets = ids[:, 1:][valid]
        for k, tc in enumerate(transcoders):
            logits = plain
            if tc is not None and tc.cross_layer is not None:
                # its layer's output from the features of every layer below: a whole run
                replace = scale_clt_features(
                    model, tc.cross_layer, {}, mode="replace", targets=[tc.layer]
                )
                with torch.no_grad(), replace:
                    logits = model(input_ids=ids, attention_mask=mask).logits
            elif tc is not None:  # from its layer up, on the plain run's input there
                with (
                    torch.no_grad(),
                    starting_at(model, tc.layer, seen[tc.layer]),
                    steer_features(model, tc, no_features, 1.0, mode="replace"),
                ):
                    logits = model(input_ids=ids, attention_mask=mask).logits
            assert logits is not None
            # the real positions' rows, contiguous: cross_entropy over a [batch, vocab, tokens]
            # view took 8.9 s of the transcoder stage's 28 s held-out loss, against 1.6 s, and
            # was further from a float64 log-softmax (1.1e-4 nats against 8e-6)
            ce = nn.functional.cross_entropy(
                logits[:, :-1][valid].float(), targets, reduction="none"
            )
            totals[k] += float(ce.double().sum())
        count += int(valid.sum())
    return [total / max(count, 1) for total in totals]


def gate_sample(prompts: dict[str, list[list[int]]], tokens: int) -> list[list[int]]:
    """The fidelity gate's sequences: the prompts of each style in turn for each question
    (``prompts[style][i]``), until about ``tokens`` tokens."""
    sample: list[list[int]] = []
    for row in zip(*prompts.values(), strict=True):
        for prompt in row:
            if sum(map(len, sample)) < tokens:
                sample.append(prompt)
    return sample


def fidelity(
    model: PreTrainedModel,
    transcoder: Transcoder,
    sequences: list[list[int]],
    *,
    token_budget: int = 4096,
    pad_id: int = 0,
    base_loss: float | None = None,
) -> dict[str, float]:
    """How well ``transcoder`` stands in for its MLP on ``sequences``: the fraction of the
    output's variance explained and L0 (each sequence's first token left out: its activations
    are outliers, e.g. at a BOS), and the next-token loss with and without the MLP replaced."""
    x, y = collect_mlp_io(
        model,
        sequences,
        transcoder.layer,
        input_hook=transcoder.input_hook,
        output_hook=transcoder.output_hook,
        token_budget=token_budget,
        pad_id=pad_id,
        skip_first=True,
        progress=False,
    )
    stats = evaluate(transcoder, x, y)
    if base_loss is None:
        base_loss = next_token_loss(model, sequences, token_budget=token_budget, pad_id=pad_id)
    replaced = next_token_loss(
        model, sequences, transcoder=transcoder, token_budget=token_budget, pad_id=pad_id
    )
    return gate_stats(
        stats["fraction_variance_explained"], stats["l0"], int(x.shape[0]), base_loss, replaced
    )


def gate_stats(
    fve: float, l0: float, tokens: int, base_loss: float, replaced: float
) -> dict[str, float]:
    """What the gate records of one transcoder (or one layer a cross-layer one writes)."""
    return {
        "fraction_variance_explained": fve,
        "l0": l0,
        "tokens": tokens,
        "next_token_loss": base_loss,
        "next_token_loss_replaced": replaced,
        "loss_increase": replaced - base_loss,
    }


def clt_fidelity(
    model: PreTrainedModel,
    clt: CrossLayerTranscoder,
    targets: list[int],
    sequences: list[list[int]],
    *,
    token_budget: int = 4096,
    pad_id: int = 0,
    base_loss: float | None = None,
) -> dict[int, dict[str, float]]:
    """``fidelity`` of a cross-layer transcoder at each layer of ``targets``: its output there
    from the features of every layer up to it, and the loss with that layer's output replaced
    (L0: the target layer's own features)."""
    io = {
        layer: collect_mlp_io(
            model,
            sequences,
            layer,
            input_hook=clt.input_hook,
            output_hook=clt.output_hook,
            token_budget=token_budget,
            pad_id=pad_id,
            skip_first=True,
            progress=False,
        )  # fmt: skip
        for layer in range(max(targets) + 1)
    }
    w = clt.W_enc
    xs = {layer: x.to(w.device, w.dtype) for layer, (x, _) in io.items()}
    features = {layer: clt.encode(layer, x) for layer, x in xs.items()}
    if base_loss is None:
        base_loss = next_token_loss(model, sequences, token_budget=token_budget, pad_id=pad_id)
    out = {}
    for t in targets:
        recon = clt.decode(t, features, xs[t]).float().cpu()
        replaced = next_token_loss(
            model, sequences, transcoder=clt.source(t), token_budget=token_budget, pad_id=pad_id
        )
        l0 = float((features[t] != 0).float().sum(-1).mean())
        fve = variance_explained(recon, io[t][1])
        out[t] = gate_stats(fve, l0, int(xs[t].shape[0]), base_loss, replaced)
    return out


def check_fidelity(transcoder: Transcoder, stats: dict[str, Any], min_fve: float | None) -> None:
    """Stop, naming the file and the hook point it was read at, when ``fidelity`` measured
    less than ``min_fve`` (None: no gate). A transcoder read at the wrong point fails here."""
    fve = stats["fraction_variance_explained"]
    what = f"transcoder {transcoder.source or '?'} (layer {transcoder.layer})"
    if transcoder.cross_layer is not None:
        source, layer = transcoder.source or "?", transcoder.layer
        what = f"cross-layer transcoder {source}, its output at layer {layer},"
    if min_fve is not None and not fve >= min_fve:
        raise StageError(
            f"{what} read at "
            f"{transcoder.input_hook} (from {transcoder.meta.get('input_hook_from', '?')}) "
            f"explains {fve:.3f} of the MLP output's variance on {stats['tokens']} tokens, "
            f"below traces.min_fve={min_fve}; if it reads another point, set traces.input_hook "
            "(mlp.hook_in, ln2.hook_normalized or hook_resid_mid)"
        )


def gated(
    model: PreTrainedModel,
    transcoders: Iterable[Transcoder],
    sample: list[list[int]],
    *,
    pad_id: int,
    min_fve: float | None,
) -> tuple[dict[int, Transcoder], dict[str, dict[str, Any]]]:
    """The traces stage's gate: each transcoder's ``fidelity`` on ``sample``, checked against
    ``min_fve`` before the next one is read (``check_fidelity``); the transcoders by layer and
    their measurements, with the hook point each was read at."""
    base_loss = next_token_loss(model, sample, pad_id=pad_id)
    kept: dict[int, Transcoder] = {}
    measured: dict[str, dict[str, Any]] = {}
    sources: list[Transcoder] = []  # a cross-layer transcoder's, measured where they write
    for tc in transcoders:
        if tc.cross_layer is not None:
            sources.append(tc)
            continue
        stats = fidelity(model, tc, sample, pad_id=pad_id, base_loss=base_loss)
        print(f"layer {tc.layer} ({tc.input_hook}): {stats}")
        check_fidelity(tc, stats, min_fve)
        measured[f"layer_{tc.layer}"] = {**stats, "input_hook": tc.input_hook}
        kept[tc.layer] = tc
    if sources:
        clt = sources[0].cross_layer
        assert clt is not None
        targets = list(range(min(tc.layer for tc in sources), clt.n_layers))
        measures = clt_fidelity(model, clt, targets, sample, pad_id=pad_id, base_loss=base_loss)
        for t, stats in measures.items():
            print(f"cross-layer output at layer {t} ({clt.input_hook}): {stats}")
            check_fidelity(clt.source(t), stats, min_fve)
            measured[f"target_{t}"] = {**stats, "input_hook": clt.input_hook}
        kept |= {tc.layer: tc for tc in sources}
    return kept, measured
