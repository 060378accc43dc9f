"""scoring: the shared-prefill NLL of continuations equals each one scored alone, by hand."""

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


def test_mismatched_lengths_and_empty_prompts_are_refused(tiny_model) -> None:
    with pytest.raises(ValueError, match="2 prompts for 1 continuations"):
        continuation_nll(tiny_model, [[1], [1]], [[2]], pad_id=2, progress=False)
    with pytest.raises(ValueError, match="empty prompt"):
        continuation_nll(tiny_model, [[]], [[2]], pad_id=2, progress=False)
