"""stability: a step the model always writes is stable and one it never writes is not (the
logits made so), draws are keyed by (row, step, sample), and the filter keeps exactly the
steps at or above the threshold."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager

import pytest
import torch
from fake_batches import FakeServer, FakeState
from tiny import params, synthetic_rows

from steerpipe.claude.message_batches import ClaudeParams
from steerpipe.lm.chat import encode
from steerpipe.steering.labels import label_steps
from steerpipe.steering.prepare import stable_steps
from steerpipe.steering.stability import (
    draw_key,
    label_of,
    regenerate,
    relabel_with_claude,
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


def _claude_answer(cid: str, params: dict, attempt: int) -> tuple[str, str]:
    """Claude's part in the fake: the rule labels of the shown steps, as JSON; the last step
    listed as both kinds where it says "BOTH"; no JSON for a problem that says "GARBLED"."""
    prompt = params["messages"][0]["content"][0]["text"]
    steps = re.findall(r"^\[\d+\] (.*)$", prompt.split("Steps:\n", 1)[1], re.MULTILINE)
    if "GARBLED" in prompt:
        return "succeeded", "I could not decide."
    v, c = label_steps(steps)
    if "BOTH" in steps[-1]:
        v, c = v + [len(steps) - 1], c + [len(steps) - 1]
    return "succeeded", json.dumps({"verification_steps": v, "conclusion_steps": c})


def test_claude_labels_each_opening_after_the_steps_before_it(tmp_path, monkeypatch) -> None:
    """With ``steps.labeller: anthropic`` the openings are Claude's to label: it sees the
    problem, the trace's steps before the step and the opening last; an unanswerable one is
    ``unlabelled`` and counts against the step's stability."""
    server = FakeServer(FakeState(answer=_claude_answer))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    rows = [
        {"problem": "Q?", "steps": ["First, 2 + 2.", "So the answer is 4.", "Done."]},
        {"problem": "GARBLED", "steps": ["One.", "Two."]},
    ]
    openings = ["So the answer is 4", "Let me double-check", "We add", "BOTH the answer is 4"]
    records = [
        {"row": 0, "step": 1, "kind": "conclusion", "openings": openings, "stability": 0.0},
        {"row": 0, "step": 2, "kind": "verification", "openings": openings[3:], "stability": 0.0},
        {"row": 1, "step": 1, "kind": "conclusion", "openings": ["So the answer is 2"]},
    ]
    settings = params(ClaudeParams, store=str(tmp_path), poll_seconds=0.01, max_poll_seconds=0.05)
    try:
        stats = relabel_with_claude(records, rows, settings)
        batches = server.state.batches.values()
        shown = [
            p["messages"][0]["content"][0]["text"] for b in batches for _, p, _, _ in b["results"]
        ]
    finally:
        server.stop()
    assert [r["labels"] for r in records] == [
        ["conclusion", "verification", "other", "conclusion"],
        ["verification"],
        ["unlabelled"],
    ]
    assert [r["stability"] for r in records] == [0.5, 1.0, 0.0]
    assert stats["unparsed"] == 1 and stats["requests_sent"] == 6
    # the step's own text is never shown: the steps before it, then the opening
    first = next(t for t in shown if t.endswith("[1] So the answer is 4"))
    assert first.endswith("Steps:\n[0] First, 2 + 2.\n\n[1] So the answer is 4")
