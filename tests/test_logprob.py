"""logprob: the sweep's teacher-forced metric equals a direct computation, one row at a time."""

from __future__ import annotations

import pytest
import torch

from steerpipe.lm.hooks import Steer, add_to_resid_pre
from steerpipe.steering.logprob import cell_score, opening_logprobs, scored_rows

EXAMPLES = [
    {"row": 0, "step": 0, "prompt_ids": [1, 30, 500, 7000], "step_ids": [12, 13, 14, 15, 16, 17]},
    {"row": 1, "step": 2, "prompt_ids": [1, 99], "step_ids": [4, 5]},
    {"row": 2, "step": 1, "prompt_ids": [1, 5, 6, 7, 8, 9, 10], "step_ids": [11, 40, 41, 42]},
]


def direct(model, ids: list[int], k: int, steer: Steer | None) -> float:
    """log p of the last k tokens, one unpadded sequence, the hook added by hand."""
    deltas = {} if steer is None else {steer.layer: steer.vector}
    with torch.no_grad(), add_to_resid_pre(model, deltas):
        logits = model(torch.tensor([ids], device=model.device)).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(len(ids) - k, len(ids)))


def test_scored_rows_cut_the_opening_and_keep_short_steps_whole() -> None:
    rows = scored_rows(EXAMPLES, n_tokens=5)
    assert rows[0] == ([1, 30, 500, 7000, 12, 13, 14, 15, 16], 5)
    assert rows[1] == ([1, 99, 4, 5], 2)  # a 2-token step is scored whole
    with pytest.raises(ValueError, match="row 3, step 0"):
        scored_rows([{"row": 3, "step": 0, "prompt_ids": [1], "step_ids": []}], 5)


@pytest.mark.device
def test_batched_steered_logprobs_equal_each_row_alone(model_on_device) -> None:
    model = model_on_device
    g = torch.Generator().manual_seed(0)
    rows = scored_rows(EXAMPLES, n_tokens=3)
    cells = [
        None,
        Steer(1, 3 * torch.randn(64, generator=g)),
        Steer(2, torch.randn(64, generator=g)),
    ]
    # every cell's rows in one list, mixed in batches of 4 (rows of different cells share one)
    all_rows = rows * len(cells)
    steers = [c for c in cells for _ in rows]
    got = opening_logprobs(model, all_rows, steers, pad_id=2, batch_size=4, progress=False)
    want = [direct(model, ids, k, s) for (ids, k), s in zip(all_rows, steers, strict=True)]
    assert got == pytest.approx(want, abs=1e-4)
    # the vector changes what it scores; the plain rows are the plain model's
    assert got[3:6] != pytest.approx(got[:3], abs=1e-3)
    # as the stage orders them: a batch is one example under every cell, whose rows compute
    # the layers below their vectors once (shared_layers.py)
    order = [k * len(rows) + j for j in range(len(rows)) for k in range(len(cells))]
    by_example = opening_logprobs(
        model,
        [all_rows[i] for i in order],
        [steers[i] for i in order],
        pad_id=2,
        batch_size=len(cells),
        progress=False,
    )
    assert by_example == pytest.approx([want[i] for i in order], abs=1e-4)


def test_cell_score_is_the_positive_kinds_change_minus_the_negatives() -> None:
    plain = [-5.0, -4.0, -6.0, -3.0]
    steered = [-3.0, -3.0, -7.0, -3.5]  # changes +2, +1 (positive); -1, -0.5 (negative)
    out = cell_score(plain, steered, [True, True, False, False])
    assert out == {"score": 1.5 + 0.75, "positive_change": 1.5, "negative_change": -0.75}
    with pytest.raises(ValueError, match="both kinds"):
        cell_score(plain, steered, [True] * 4)


def test_the_head_on_scored_positions_only_gives_the_full_heads_bits(tiny_model) -> None:
    """The head and log-softmax run only where a scored token is predicted; on the CPU that is
    bit for bit what the whole padded batch's logits give at those positions."""
    from steerpipe.lm.activations import right_pad

    g = torch.Generator().manual_seed(1)
    rows = scored_rows(EXAMPLES, n_tokens=3)
    steers = [None, Steer(1, 3 * torch.randn(64, generator=g)), None]
    got = opening_logprobs(tiny_model, rows, steers, pad_id=2, batch_size=3, progress=False)
    ids, mask = right_pad([r for r, _ in rows], 2)
    deltas = {1: torch.zeros(3, 64)}
    deltas[1][1] = steers[1].vector  # type: ignore[union-attr]
    with torch.no_grad(), add_to_resid_pre(tiny_model, deltas):
        logp = torch.log_softmax(tiny_model(input_ids=ids, attention_mask=mask).logits.double(), -1)
    for j, (row, k) in enumerate(rows):
        n = len(row)
        whole = logp[j, n - k - 1 : n - 1].gather(-1, torch.tensor(row[n - k :])[:, None]).sum()
        assert got[j] == float(whole)  # exactly
