"""side_effects: experiment B's answer margins under experiment A's vector, against each row by
hand and against experiment B's own plain margins."""

from __future__ import annotations

import pytest
import torch

from steerpipe.lm.hooks import Steer, add_to_resid_pre
from steerpipe.steering.side_effects import steered_margins
from steerpipe.transcoders.neuron_eval import answer_margins


@pytest.mark.device
def test_steered_margins_equal_each_row_by_hand_and_experiment_bs_plain_ones(
    model_on_device,
) -> None:
    model = model_on_device
    prompts = [[5, 300, 2000, 41, 7], [77, 12], [400, 401, 402, 403, 404, 405, 406]]
    answers = [True, False, True]
    vector = 3 * torch.randn(64, generator=torch.Generator().manual_seed(2))
    steer = Steer(1, vector)
    rows, truths = prompts * 2, answers * 2
    steers = [None] * 3 + [steer] * 3
    got = steered_margins(model, rows, truths, steers, yes_id=9, no_id=11, pad_id=2, batch_size=4)

    def by_hand(ids: list[int], right: bool, s: Steer | None) -> float:
        deltas = {} if s is None else {s.layer: s.vector}
        with torch.no_grad(), add_to_resid_pre(model, deltas):
            logits = model(torch.tensor([ids], device=model.device)).logits[0, -1].double()
        logp = torch.log_softmax(logits, dim=-1)
        margin = float(logp[9] - logp[11])
        return margin if right else -margin

    want = [by_hand(i, a, s) for i, a, s in zip(rows, truths, steers, strict=True)]
    assert got == pytest.approx(want, abs=1e-4)
    assert got[3:] != pytest.approx(got[:3], abs=1e-3)  # the vector moves the margins
    # with no vector, experiment B's base margins at the prompt (no transcoder hook)
    plain = answer_margins(
        model, prompts, [None] * 3, {}, answers, yes_id=9, no_id=11, batch_size=4, pad_id=2
    )
    assert got[:3] == pytest.approx(plain, abs=1e-5)
