"""sampling: conditions sharing batches sample what each samples alone, record by record."""

from __future__ import annotations

import pytest
import torch
from tiny import params

from steerpipe.lm.generation import generate
from steerpipe.lm.hooks import Steer
from steerpipe.lm.scoring import continuation_nll
from steerpipe.steering.sampling import SamplingParams, sample_conditions


def test_sample_conditions_records_every_condition_prompt_and_sample(tiny_model, tokenizer) -> None:
    sampling = params(SamplingParams, max_new_tokens=3, batch_size=4)
    prompts = [
        {"row": 7, "step": 1, "prompt_ids": tokenizer.encode("One two")},
        {"row": 9, "step": 0, "prompt_ids": tokenizer.encode("Three four five")},
    ]
    steer = Steer(1, torch.randn(64))
    conditions = [({"condition": "control"}, None), ({"condition": "steered"}, steer)]
    records = sample_conditions(
        tiny_model, tokenizer, conditions, prompts, n_samples=2, sampling=sampling, seed=5
    )
    want = [
        {"condition": c, "row": r, "step": k, "sample": s}
        for c in ("control", "steered")
        for r, k in ((7, 1), (9, 0))
        for s in (0, 1)
    ]
    extra = ("text", "new_tokens", "nll")
    assert [{k: v for k, v in rec.items() if k not in extra} for rec in records] == want
    outs = generate(
        tiny_model,
        [p["prompt_ids"] for _ in conditions for p in prompts for _ in range(2)],
        steers=[None] * 4 + [steer] * 4,
        max_new_tokens=3,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=5,
        batch_size=4,
        pad_id=tokenizer.pad_token_id,
    )
    assert [r["text"] for r in records] == [
        tokenizer.decode(o, skip_special_tokens=True) for o in outs
    ]
    # the plain model's NLL of each sample, steered or not, to 4 places
    inputs = [p["prompt_ids"] for _ in conditions for p in prompts for _ in range(2)]
    nll = continuation_nll(tiny_model, inputs, outs, pad_id=tokenizer.pad_token_id)
    assert [r["new_tokens"] for r in records] == [len(o) for o in outs]
    assert [r["nll"] for r in records] == [round(v, 4) for v in nll]


@pytest.mark.device
def test_conditions_in_one_batch_equal_each_run_alone(model_on_device, tokenizer) -> None:
    """The steer stage's conditions share batches; each one alone (at its place in the list)
    samples the same texts, so nothing leaks between the rows of a batch."""
    sampling = params(SamplingParams, max_new_tokens=5, batch_size=6, temperature=1.0)
    prompts = [
        {"row": 1, "step": 0, "prompt_ids": tokenizer.encode("One two")},
        {"row": 2, "step": 3, "prompt_ids": tokenizer.encode("Three four five six")},
    ]
    vector = 6 * torch.randn(64, generator=torch.Generator().manual_seed(4))
    conditions = [
        ({"condition": "control"}, None),
        ({"condition": "steered"}, Steer(1, vector)),
        ({"condition": "negated"}, Steer(1, -vector)),
        ({"condition": "other layer"}, Steer(2, vector)),
    ]
    kw = {"n_samples": 3, "sampling": sampling, "seed": 11}
    together = sample_conditions(model_on_device, tokenizer, conditions, prompts, **kw)
    for k in range(len(conditions)):
        alone = sample_conditions(
            model_on_device, tokenizer, conditions[k : k + 1], prompts, first_condition=k, **kw
        )
        assert alone == together[k * 6 : (k + 1) * 6]
    # the conditions do differ: the test could fail
    texts = {
        c: [r["text"] for r in together if r["condition"] == c] for c in ("control", "steered")
    }
    assert texts["control"] != texts["steered"]
    # and the key is the place in the list: at another place, the same condition redraws
    moved = sample_conditions(model_on_device, tokenizer, conditions[1:2], prompts, **kw)
    assert [r["text"] for r in moved] != [r["text"] for r in together[6:12]]
