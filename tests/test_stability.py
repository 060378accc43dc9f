"""stability: a step the model always writes is stable and one it never writes is not (the
logits made so), draws are keyed by (row, step, sample), and the filter keeps exactly the
steps at or above the threshold."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from tiny import synthetic_rows

from steerpipe.lm.chat import encode
from steerpipe.steering.prepare import stable_steps
from steerpipe.steering.stability import (
    draw_key,
    label_of,
    regenerate,
    stability_items,
    stability_summary,
)

K = 4


@contextmanager
def always_writes(model, tokenizer, text: str):
    """The model's next token is always the next token of ``text`` (the first one after any
    other): the logits are -1e4 but at that token, whatever the input."""
    target = encode(tokenizer, text)
    assert len(set(target)) == len(target)  # each token says where in the text the model is
    after = {a: b for a, b in zip(target, target[1:], strict=False)}
    last: dict[str, torch.Tensor] = {}

    def read(module, args):
        last["ids"] = args[0][:, -1]

    def write(module, args, logits):
        nxt = torch.tensor([after.get(int(t), target[0]) for t in last["ids"]])
        forced = torch.full_like(logits, -1e4)
        forced[torch.arange(len(nxt)), :, nxt] = 1e4
        return forced

    handles = [
        model.get_input_embeddings().register_forward_pre_hook(read),
        model.get_output_embeddings().register_forward_hook(write),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _regenerate(model, tokenizer, items, **kwargs):
    options = {"n_samples": K, "max_new_tokens": 6, "temperature": 0.6, "top_p": 0.95}
    options |= {"seed": 0, "batch_size": 8, "pad_id": int(tokenizer.pad_token_id)}
    return regenerate(model, tokenizer, items, progress=False, **(options | kwargs))


def test_a_step_always_written_is_stable_and_one_never_written_is_not(
    tiny_model, tokenizer
) -> None:
    rows = synthetic_rows(2)
    items = stability_items(rows, tokenizer, ["conclusion", "verification"], separator="\n\n")
    assert [(it["row"], it["step"], it["kind"]) for it in items] == [
        (0, 3, "conclusion"),
        (0, 2, "verification"),
        (1, 3, "conclusion"),
        (1, 2, "verification"),
    ]
    with always_writes(tiny_model, tokenizer, " Therefore, the answer is"):
        concluding = _regenerate(tiny_model, tokenizer, items)
    assert all(
        t.strip().startswith("Therefore, the answer") for r in concluding for t in r["openings"]
    )
    assert [r["stability"] for r in concluding] == [1.0, 0.0, 1.0, 0.0]
    with always_writes(tiny_model, tokenizer, " First, we add the apples"):
        other = _regenerate(tiny_model, tokenizer, items)
    assert [r["stability"] for r in other] == [0.0, 0.0, 0.0, 0.0]
    assert {label for r in other for label in r["labels"]} == {"other"}
    assert stability_summary(concluding, K)["conclusion"] == {
        "steps": 2,
        "mean_stability": 1.0,
        "at_least_half": 2,
        "levels": {"0/4": 0, "1/4": 0, "2/4": 0, "3/4": 0, "4/4": 2},
    }


def test_draws_are_keyed_by_row_step_and_sample(tiny_model, tokenizer) -> None:
    """A step's regenerations do not move when other steps come before or after it."""
    items = stability_items(synthetic_rows(3), tokenizer, ["conclusion"], separator="\n\n")
    kw = {"temperature": 1.0, "top_p": 1.0}
    alone = _regenerate(tiny_model, tokenizer, items[1:2], **kw)
    together = _regenerate(tiny_model, tokenizer, items, **kw)
    reordered = _regenerate(tiny_model, tokenizer, [items[2], items[0], items[1]], **kw)
    assert together[1]["openings"] == alone[0]["openings"] == reordered[2]["openings"]
    assert len(set(together[1]["openings"])) > 1  # the K samples differ from one another
    assert together[0]["openings"] != together[1]["openings"]
    assert len({draw_key(r, k, j) for r in range(3) for k in range(5) for j in range(K)}) == 60
    with pytest.raises(ValueError):
        draw_key(0, 1 << 16, 0)


def test_the_filter_keeps_exactly_the_steps_at_or_above_the_threshold() -> None:
    records = [
        {"row": 0, "step": 3, "kind": "conclusion", "stability": 0.75},
        {"row": 1, "step": 3, "kind": "conclusion", "stability": 0.5},
        {"row": 2, "step": 4, "kind": "conclusion", "stability": 0.25},
        {"row": 2, "step": 1, "kind": "other", "stability": 1.0},
    ]
    assert stable_steps(records, 0.5) == {"conclusion": {(0, 3), (1, 3)}, "other": {(2, 1)}}
    assert stable_steps(records, 0.8) == {"other": {(2, 1)}}
    assert label_of("**Therefore, the answer is 5**") == "conclusion"
    assert label_of("Wait, let me check") == "verification"
    assert label_of("Next we add") == "other"
