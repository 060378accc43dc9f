"""scoring: the shared-prefix NLL of continuations equals each one scored alone, by hand."""

from __future__ import annotations

import pytest
import torch

from steerpipe.lm.scoring import continuation_nll

PROMPTS = [[1, 30, 500, 7000], [1, 99], [1, 30, 500, 7000], [1, 5, 6, 7, 8], [1, 99]]
CONTINUATIONS = [[12, 13, 14, 15], [4], [40, 41], [11, 40, 41, 42, 43, 44], []]


def by_hand(model, prompt: list[int], cont: list[int]) -> float:
    """Mean -log p of ``cont`` after ``prompt``: one unpadded forward of both, no cache."""
    ids = prompt + cont
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=model.device)).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return -sum(float(logp[t - 1, ids[t]]) for t in range(len(prompt), len(ids))) / len(cont)


@pytest.mark.device
@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_shared_prefill_nll_equals_each_continuation_alone(model_on_device, batch_size) -> None:
    got = continuation_nll(
        model_on_device, PROMPTS, CONTINUATIONS, pad_id=2, batch_size=batch_size, progress=False
    )
    want = [
        by_hand(model_on_device, p, c) for p, c in zip(PROMPTS[:4], CONTINUATIONS[:4], strict=True)
    ]
    assert got[:4] == pytest.approx(want, abs=1e-4)
    assert got[4] is None  # an empty continuation has no likelihood
    # a random model spreads its guesses: each NLL is near log(vocab), and they differ
    assert len({round(g, 4) for g in got[:4]}) == 4


# a solve stage's rows: one instruction, then a short problem, two samples of each
INSTRUCTION = [1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]
SOLVE_PROMPTS = [INSTRUCTION + p for p in ([7, 8], [9], [7, 3, 3]) for _ in range(2)]
SOLVE_CONTS = [[20, 21, 22], [23], [24, 25], [26, 27, 28, 29, 30], [31], [32, 33]]


@pytest.mark.parametrize(("batch_size", "token_budget"), [(32, 8192), (2, 8192), (32, 7)])
def test_rows_that_share_an_instruction_equal_each_alone(
    tiny_model, batch_size, token_budget
) -> None:
    got = continuation_nll(
        tiny_model, SOLVE_PROMPTS, SOLVE_CONTS, pad_id=2, batch_size=batch_size,
        token_budget=token_budget, progress=False,
    )  # fmt: skip
    want = [by_hand(tiny_model, p, c) for p, c in zip(SOLVE_PROMPTS, SOLVE_CONTS, strict=True)]
    assert got == pytest.approx(want, abs=1e-5)


def test_families_share_a_prefix_only_where_it_saves_tokens() -> None:
    from steerpipe.lm.scoring import _families

    groups: dict[tuple[int, ...], list[int]] = {}
    for i, prompt in enumerate(SOLVE_PROMPTS):
        groups.setdefault(tuple(prompt), []).append(i)
    # the three problems share the instruction (and [7] for two of them): one family, whose
    # prefix is the instruction, its groups in prompt order
    assert _families(groups, SOLVE_CONTS) == [(len(INSTRUCTION), [4, 5, 0, 1, 2, 3])]
    # long prompts that share only their first token stay apart, each prefilled to its last
    long = {tuple([1] + [5] * 30): [0, 1], tuple([1] + [6] * 30): [2]}
    assert _families(long, [[3]] * 3) == [(30, [0, 1]), (30, [2])]
    # a group of one row with a one-token prompt has nothing to prefill
    assert _families({(1,): [0]}, [[3, 4]]) == [(0, [0])]


def test_mismatched_lengths_and_empty_prompts_are_refused(tiny_model) -> None:
    with pytest.raises(ValueError, match="2 prompts for 1 continuations"):
        continuation_nll(tiny_model, [[1], [1]], [[2]], pad_id=2, progress=False)
    with pytest.raises(ValueError, match="empty prompt"):
        continuation_nll(tiny_model, [[]], [[2]], pad_id=2, progress=False)


def test_the_plain_rows_nll_comes_with_their_tokens(tiny_model) -> None:
    """``generate``'s ``logprobs`` of the unsteered rows are the plain model's: their mean is
    the NLL the teacher-forced pass gives, which then runs only for the steered rows."""
    from steerpipe.lm.generation import generate
    from steerpipe.lm.hooks import Steer

    prompts = [p for p in PROMPTS[:4] for _ in range(2)]
    vec = 3 * torch.randn(64, generator=torch.Generator().manual_seed(3))
    steers = [None, Steer(1, vec)] * 4
    kwargs = {"max_new_tokens": 6, "temperature": 0.8, "top_p": 0.95, "progress": False}
    plain: dict[int, list[float]] = {}
    outs = generate(tiny_model, prompts, steers=steers, seed=2, logprobs=plain, **kwargs)
    assert outs == generate(tiny_model, prompts, steers=steers, seed=2, **kwargs)
    assert sorted(plain) == [0, 2, 4, 6]  # the unsteered rows only
    assert all(len(plain[i]) == len(outs[i]) == 6 for i in plain)
    for i in plain:
        assert -sum(plain[i]) / 6 == pytest.approx(
            by_hand(tiny_model, prompts[i], outs[i]), abs=1e-5
        )
    calls = []
    handle = tiny_model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    try:
        got = continuation_nll(tiny_model, prompts, outs, pad_id=2, known=plain, progress=False)
    finally:
        handle.remove()
    want = continuation_nll(tiny_model, prompts, outs, pad_id=2, progress=False)
    assert got == pytest.approx(want, abs=1e-5)
    assert all(got[i] == -sum(plain[i]) / 6 for i in plain)
    # the pass ran for the four steered rows only: fewer calls than for all eight
    counted = []
    handle = tiny_model.register_forward_pre_hook(
        lambda m, a, k: counted.append(1), with_kwargs=True
    )
    try:
        continuation_nll(
            tiny_model,
            [prompts[i] for i in (1, 3, 5, 7)],
            [outs[i] for i in (1, 3, 5, 7)],
            pad_id=2,
            progress=False,
        )
    finally:
        handle.remove()
    assert len(calls) == len(counted)
    # log-probabilities that do not cover the continuation are not used
    short = {0: plain[0][:3]}
    assert continuation_nll(
        tiny_model, prompts[:1], outs[:1], pad_id=2, known=short, progress=False
    ) == pytest.approx(want[:1], abs=1e-5)
