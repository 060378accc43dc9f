"""noise: SplitMix64 in exact integer arithmetic, and noise that depends on its keys only."""

from __future__ import annotations

import torch


def test_splitmix64_is_exact_integer_arithmetic() -> None:
    # exact bits are what make a GPU draw the same noise as the CPU: any float step or
    # signed shift would show here on the inputs with the top bit set
    from steerpipe.lm.noise import splitmix64

    xs = [0, 1, 12345, 2**62 + 7, 2**63 - 1, -1, -(2**63), -987654321]
    got = splitmix64(torch.tensor(xs, dtype=torch.long)).tolist()
    mask = (1 << 64) - 1
    assert [g & mask for g in got] == [_splitmix64_reference(x & mask) for x in xs]


def test_row_noise_depends_on_row_step_and_token_only() -> None:
    from steerpipe.lm.noise import RowNoise, row_seed

    scores = torch.zeros(3, 40)
    scores[1, 10:] = float("-inf")  # outside row 1's nucleus
    ids = torch.zeros(3, 1, dtype=torch.long)
    seeds = [row_seed(0, i) for i in range(3)]
    both = RowNoise(seeds)
    first, second = both(ids, scores), both(ids, scores)
    alone = RowNoise(seeds[1:2])
    assert torch.equal(alone(ids[:1], scores[1:2]), first[1:2])  # whatever shares the batch
    picked = RowNoise(seeds)
    picked(ids, scores)
    picked.select(torch.tensor([2, 0]))  # generation drops the rows that have finished
    assert torch.equal(picked(ids[:2], scores[[2, 0]]), second[[2, 0]])
    assert not torch.equal(first, second)  # a new draw each step
    assert torch.isinf(first[1, 10:]).all() and torch.isfinite(first[1, :10]).all()
    assert len(set(first[0].tolist())) == 40  # distinct per token
    # Gumbel(0, 1): mean 0.5772, variance pi^2 / 6 (about 1.645)
    many = RowNoise([row_seed(1, i) for i in range(200)])(ids, torch.zeros(200, 100))
    assert abs(many.mean().item() - 0.5772) < 0.02
    assert abs(many.var().item() - 1.645) < 0.06


def _splitmix64_reference(x: int) -> int:
    # Vigna's splitmix64.c (prng.di.unimi.it), the finaliser applied to the counter x,
    # in Python's unbounded integers
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_top_p_keeps_the_nucleus_of_hf_s_warper() -> None:
    # transformers' TopPLogitsWarper (generation/logits_process.py) is the reference: a full
    # ascending sort; TopP finds the same tokens among the top k, or falls back to it
    from transformers import TopPLogitsWarper

    from steerpipe.lm.noise import TopP

    torch.manual_seed(0)
    ids = torch.zeros(6, 1, dtype=torch.long)
    for scale in (0.1, 1.0, 4.0, 30.0):  # nuclei of about all 3,000 tokens down to one
        scores = torch.randn(6, 3000) * scale
        scores[0, :2900] = float("-inf")  # a row with few finite tokens
        for p in (0.5, 0.95, 1.0):
            want = TopPLogitsWarper(p)(ids, scores)
            got = TopP(p, k=64)(ids, scores)
            assert torch.equal(got, want), (scale, p)
    wide = torch.zeros(2, 500)  # flat: the nucleus holds 475 tokens, past k
    got = TopP(0.95, k=64)(ids[:2], wide)
    assert torch.equal(got, TopPLogitsWarper(0.95)(ids[:2], wide))
    assert int(torch.isfinite(got[0]).sum()) == 475


def test_sampler_picks_the_tokens_of_the_processors_and_argmax() -> None:
    # Sampler computes the noise and the argmax on the nucleus alone; the reference is the
    # full step it replaces: HF's temperature warper, TopP and RowNoise over the whole
    # vocabulary, then argmax (generation.py before it, and HF generate's path still)
    from steerpipe.lm.noise import RowNoise, Sampler, row_seed

    torch.manual_seed(0)
    rows, vocab = 12, 3000
    ids = torch.zeros(rows, 1, dtype=torch.long)
    seeds = [row_seed(3, i) for i in range(rows)]
    for scale in (0.05, 1.0, 4.0, 30.0):  # nuclei past the top k (flat) down to one token
        for top_p in (0.5, 0.95, 1.0):
            scores = torch.randn(rows, vocab) * scale
            scores[0, :2990] = float("-inf")  # few finite tokens
            scores[1, [7, 2000]] = 50.0  # two tokens far above the rest: a nucleus of two
            scores[2] = float("-inf")  # no finite score at all
            fused = Sampler(0.7, top_p, RowNoise(seeds))
            full = Sampler(0.7, top_p, RowNoise(seeds)).processors()
            fused.top_p.k = full[1].k = 64  # type: ignore[attr-defined]
            for _ in range(3):  # steps: each draws new noise
                want = full(ids, scores).argmax(-1)
                assert torch.equal(fused(ids, scores), want), (scale, top_p)
            fused.select(torch.tensor([5, 1]))  # rows dropped as they finish
            full[2].select(torch.tensor([5, 1]))  # type: ignore[attr-defined]
            assert torch.equal(
                fused(ids[:2], scores[[5, 1]]), full(ids[:2], scores[[5, 1]]).argmax(-1)
            )
