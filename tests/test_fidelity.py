"""fidelity: MLP activations collected exactly, the next-token loss, and the gate that refuses a
transcoder read at the wrong convention."""

from __future__ import annotations

import copy

import pytest
import torch

from steerpipe.config import StageError
from steerpipe.lm.activations import right_pad, token_batches
from steerpipe.lm.hooks import mlp_modules, norm_gain
from steerpipe.transcoders.fidelity import (
    check_fidelity,
    collect_mlp_io,
    fidelity,
    gate_sample,
    next_token_loss,
    next_token_losses,
    variance_explained,
)
from steerpipe.transcoders.training import train_transcoder
from steerpipe.transcoders.transcoder import Transcoder

SEQS = [[1, 5, 9, 300, 20, 41], [1, 44, 3], [1, 700, 701, 702, 703, 704, 705, 706]]


def test_collect_mlp_io_batched_equals_alone(tiny_model) -> None:
    x, y = collect_mlp_io(tiny_model, SEQS, 1, token_budget=10_000, progress=False)
    assert x.shape == (sum(map(len, SEQS)), 64) and y.shape == x.shape
    alone = [collect_mlp_io(tiny_model, [s], 1, progress=False) for s in SEQS]
    # batches are sorted longest first
    order = sorted(range(3), key=lambda i: -len(SEQS[i]))
    torch.testing.assert_close(x, torch.cat([alone[i][0] for i in order]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y, torch.cat([alone[i][1] for i in order]), atol=1e-5, rtol=1e-5)


def test_next_token_loss_batched_equals_manual(tiny_model) -> None:
    got = next_token_loss(tiny_model, SEQS, token_budget=10_000)
    total, count = 0.0, 0
    for s in SEQS:  # one sequence at a time, unpadded, a float64 log-softmax
        logits = tiny_model(torch.tensor([s])).logits[0, :-1].double()
        logp = torch.log_softmax(logits, dim=-1)
        total -= float(logp.gather(-1, torch.tensor(s[1:])[:, None]).sum())
        count += len(s) - 1
    assert abs(got - total / count) < 1e-6


def test_replaced_losses_start_at_the_layer_with_the_full_forwards_bits(tiny_model) -> None:
    """Each transcoder's loss reuses the plain run's layers below it: the same float as a
    forward through every layer with the MLP replaced (the batches are the same)."""
    from steerpipe.transcoders.transcoder import steer_features

    g = torch.Generator().manual_seed(4)
    train = [torch.randint(3, 1000, (30,), generator=g).tolist() for _ in range(40)]
    tcs = []
    for layer in (1, 2):
        x, y = collect_mlp_io(tiny_model, train, layer, progress=False)
        tcs.append(
            train_transcoder(
                x, y, layer=layer, d_sae=128, l1=1e-3, lr=1e-3, steps=50, batch_size=128,
                progress=False,
            )
        )  # fmt: skip
    got = next_token_losses(tiny_model, SEQS, [None, *tcs, None], token_budget=12)
    want = [next_token_loss(tiny_model, SEQS, token_budget=12)]
    for tc in tcs:
        total, count = 0.0, 0
        for batch in token_batches([len(s) for s in SEQS], 12):
            ids, mask = right_pad([SEQS[i] for i in batch], 0)
            with (
                torch.no_grad(),
                steer_features(tiny_model, tc, torch.zeros(0).long(), 1.0, mode="replace"),
            ):
                logits = tiny_model(input_ids=ids, attention_mask=mask).logits
            valid = mask[:, 1:].bool()
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1][valid].float(), ids[:, 1:][valid], reduction="none"
            )
            total += float(ce.double().sum())
            count += int(valid.sum())
        want.append(total / count)
    assert got == [want[0], want[1], want[2], want[0]]
    # without the plain loss the plain run stops at the transcoder's input: one head a batch
    heads = []
    handle = tiny_model.lm_head.register_forward_hook(lambda *a: heads.append(1))
    try:
        alone = next_token_losses(tiny_model, SEQS, [tcs[1]], token_budget=12)
    finally:
        handle.remove()
    assert alone == [want[2]]
    assert len(heads) == len(list(token_batches([len(s) for s in SEQS], 12)))
    assert len(set(got)) == 3 and len(list(token_batches([len(s) for s in SEQS], 12))) > 1


def test_the_plain_runs_mlp_io_is_collect_mlp_ios(tiny_model) -> None:
    """The transcoder stage's held-out MLP inputs and outputs come from the loss's plain run:
    the same bits as ``collect_mlp_io``'s own run, which stops at the layer (same batches)."""
    g = torch.Generator().manual_seed(6)
    w = [
        torch.randn(shape, generator=g) * 0.1 for shape in ((64, 32), (32,), (32, 64), (64,), (64,))
    ]
    tc = Transcoder(*w, layer=1)
    io: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {1: ([], []), 2: ([], [])}
    got = next_token_losses(tiny_model, SEQS, [None, tc], token_budget=12, mlp_io=io)
    assert got == next_token_losses(tiny_model, SEQS, [None, tc], token_budget=12)
    assert len(io[1][0]) == len(list(token_batches([len(s) for s in SEQS], 12))) > 1
    for layer in (1, 2):
        x, y = collect_mlp_io(tiny_model, SEQS, layer, token_budget=12, progress=False)
        assert torch.equal(torch.cat(io[layer][0]), x) and torch.equal(torch.cat(io[layer][1]), y)
    with pytest.raises(ValueError, match="include None"):
        next_token_losses(tiny_model, SEQS, [tc], mlp_io={1: ([], [])})


def test_gate_sample_takes_the_styles_in_turn() -> None:
    prompts = {"basic": [[1, 2], [3, 4, 5], [6]], "0shot": [[7], [8, 9], [10, 11]]}
    assert gate_sample(prompts, 4) == [[1, 2], [7], [3, 4, 5]]
    assert gate_sample(prompts, 100) == [[1, 2], [7], [3, 4, 5], [8, 9], [6], [10, 11]]


def _smollm2_like(tiny_model):
    """A copy of the tiny model whose layer 1 norm has SmolLM2's range of gains (0.0003-0.4,
    measured at its layer 14) and an MLP large enough to matter."""
    model = copy.deepcopy(tiny_model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        norm, mlp, _ = mlp_modules(model, 1)
        norm.weight.copy_(torch.rand(norm.weight.shape, generator=g) * 0.4 + 3e-4)
        for p in mlp.parameters():
            p.mul_(24)
    return model


def test_fidelity_gate_refuses_the_wrong_convention(tiny_model) -> None:
    """One trained transcoder, rewritten exactly for the input before the norm's gain, passes
    the gate there and explains the same; the same weights read at the other point are
    refused, with a message naming the file, the hook point and the value."""
    model = _smollm2_like(tiny_model)
    g = torch.Generator().manual_seed(1)
    train = [torch.randint(3, 1000, (40,), generator=g).tolist() for _ in range(200)]
    held = [torch.randint(3, 1000, (40,), generator=g).tolist() for _ in range(12)]
    x, y = collect_mlp_io(model, train, 1, progress=False)
    tc = train_transcoder(
        x, y, layer=1, d_sae=256, l1=1e-3, lr=1e-3, steps=1500, batch_size=256, progress=False
    )
    tc.source = "ours.safetensors"
    gain = norm_gain(mlp_modules(model, 1)[0])
    same = Transcoder(  # the same map of x / rms(x): the gain folded into W_enc, b_dec into b_enc
        gain[:, None] * tc.W_enc,
        tc.b_enc - tc.b_dec @ tc.W_enc,
        tc.W_dec,
        torch.zeros(64),
        tc.b_dec_out,
        layer=1,
        input_hook="ln2.hook_normalized",
        source="tc.pt",
        meta={"input_hook_from": "cfg.hook_point"},
    )
    right = fidelity(model, same, held)
    assert right["tokens"] == 12 * 39  # each sequence's first token is left out
    assert right["fraction_variance_explained"] > 0.5
    mine = fidelity(model, tc, held)
    assert abs(mine["fraction_variance_explained"] - right["fraction_variance_explained"]) < 1e-4
    check_fidelity(same, right, 0.5)
    for wrong_hook, weights in (("mlp.hook_in", same), ("ln2.hook_normalized", tc)):
        wrong = copy.copy(weights)
        wrong.input_hook = wrong_hook
        stats = fidelity(model, wrong, held)
        assert stats["fraction_variance_explained"] < 0.1
        where = rf"{wrong.source} \(layer 1\) read at {wrong_hook} \(from "
        with pytest.raises(StageError, match=where) as e:
            check_fidelity(wrong, stats, 0.5)
        assert f"{stats['fraction_variance_explained']:.3f}" in str(e.value)
        assert "traces.min_fve=0.5" in str(e.value)
    check_fidelity(wrong, stats, None)  # null: measure only


def test_variance_explained_is_exact_whatever_the_threads() -> None:
    """Each row's sum, then the rows' exactly: the float64 sums by hand to 1e-9 (a float32
    sum of the whole tensor is off by 2e-8 here, and its bits followed the thread count:
    the traces stage's gate on the packaged model, 0.29598308 on one thread, 0.29598302 on
    two), the same bits on one thread and on two."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(507, 576, generator=g) * 5 + 1
    recon = y + torch.randn(507, 576, generator=g)
    yd, rd = y.double(), recon.double()
    want = 1 - float(((rd - yd) ** 2).sum()) / float(((yd - y.mean(0).double()) ** 2).sum())
    threads = torch.get_num_threads()
    try:
        got = []
        for n in (1, 2):
            torch.set_num_threads(n)
            got.append(variance_explained(recon, y))
    finally:
        torch.set_num_threads(threads)
    assert got[0] == got[1] and got[0] == pytest.approx(want, abs=1e-9)
