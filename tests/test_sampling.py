"""sampling: conditions sharing batches sample what each samples alone, record by record."""

from __future__ import annotations

import pytest
import torch
from tiny import params

from steerpipe.lm.generation import generate
from steerpipe.lm.hooks import Steer
from steerpipe.lm.scoring import continuation_nll
from steerpipe.steering.sampling import Prompting, SamplingParams, sample_conditions


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


def test_prompting_baselines_ask_after_the_prompt_and_prefill_the_sample(
    tiny_model, tokenizer
) -> None:
    """``Prompting.ask`` lengthens the prompt; ``prefill`` begins the sample: its first
    sampled token follows the prefill (greedy: the argmax after prompt + prefill), its text
    starts with the prefill, and its NLL scores prefill and sample after the prompt."""
    sampling = params(SamplingParams, max_new_tokens=4, batch_size=8, temperature=0.0)
    prompts = [
        {"row": 0, "step": 2, "prompt_ids": tokenizer.encode("One two three")},
        {"row": 5, "step": 1, "prompt_ids": tokenizer.encode("Four five")},
    ]
    ask, prefill = (
        tuple(tokenizer.encode(" Conclude now.")),
        tuple(tokenizer.encode(" The answer is")),
    )
    conditions = [
        ({"condition": "control"}, None),
        ({"condition": "instruction"}, Prompting(ask=ask)),
        ({"condition": "prefill"}, Prompting(prefill=prefill)),
    ]
    records = sample_conditions(
        tiny_model, tokenizer, conditions, prompts, n_samples=1, sampling=sampling, seed=0
    )
    by = {(r["condition"], r["row"]): r for r in records}
    for p in prompts:
        ids = p["prompt_ids"]
        with torch.no_grad():
            after = tiny_model(torch.tensor([ids + list(prefill)])).logits[0, -1]
        out = generate(
            tiny_model, [ids + list(prefill)], max_new_tokens=4, temperature=0.0, top_p=1.0,
            pad_id=tokenizer.pad_token_id,
        )[0]  # fmt: skip
        assert out[0] == int(after.argmax())
        mine = by[("prefill", p["row"])]
        assert mine["text"] == tokenizer.decode(list(prefill) + out, skip_special_tokens=True)
        assert mine["text"].startswith(" The answer is") and mine["new_tokens"] == len(out)
        want = continuation_nll(tiny_model, [ids], [list(prefill) + out], pad_id=2)[0]
        assert mine["nll"] == round(want, 4)
        asked = generate(
            tiny_model, [ids + list(ask)], max_new_tokens=4, temperature=0.0, top_p=1.0,
            pad_id=tokenizer.pad_token_id,
        )[0]  # fmt: skip
        assert by[("instruction", p["row"])]["text"] == tokenizer.decode(
            asked, skip_special_tokens=True
        )
        assert asked != out  # the test could fail: asking and prefilling sample differently
