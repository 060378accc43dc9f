"""step_labels: steps labelled by Claude through a fake Message Batches server, answers parsed."""

from __future__ import annotations

import json
import re

import pytest
from fake_batches import FakeServer, FakeState
from tiny import params, synthetic_rows

from steerpipe.claude.message_batches import ClaudeParams
from steerpipe.claude.step_labels import label_request, label_rows_with_claude, parse_labels
from steerpipe.steering.labels import label_steps


def _label_answer(cid: str, params: dict, attempt: int) -> tuple[str, str]:
    """Claude's part in the fake: the rule labels as JSON, in the forms models answer in."""
    prompt = params["messages"][0]["content"][0]["text"]
    steps = re.findall(r"^\[\d+\] (.*)$", prompt.split("Steps:\n", 1)[1], re.MULTILINE)
    if "GARBLED" in prompt:
        return "succeeded", "I could not decide."
    v, c = label_steps(steps)
    body = json.dumps({"verification_steps": v + [99], "conclusion_steps": c})
    return "succeeded", [body, f"Here you go:\n```json\n{body}\n```"][len(steps) % 2]


def test_label_rows_with_claude(tmp_path, monkeypatch) -> None:
    server = FakeServer(FakeState(answer=_label_answer))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    rows = synthetic_rows(4)
    rows[1]["steps"] = rows[1]["steps"][:3]  # an odd number of steps: the fenced answer
    rows[3]["problem"] = "GARBLED"
    for r in rows:
        r["verification_steps"], r["conclusion_steps"] = [], []
    settings = params(ClaudeParams, store=str(tmp_path), poll_seconds=0.01, max_poll_seconds=0.05)
    try:
        stats = label_rows_with_claude(rows, settings)
        assert [(r["verification_steps"], r["conclusion_steps"]) for r in rows] == [
            ([2], [3]),
            ([2], []),
            ([2], [3]),
            ([], []),
        ]
        assert stats["unparsed"] == 1 and stats["requests_sent"] == 4
        again = label_rows_with_claude([dict(r) for r in rows], settings)
        assert again["requests_sent"] == 0 and server.state.requests_received == 4
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("answer", "labels"),
    [
        ('{"verification_steps": [1], "conclusion_steps": [2]}', ([1], [2])),
        ('Sure.\n```json\n{"verification_steps": [], "conclusion_steps": [0, 5]}\n```', ([], [0])),
        ('{"verification_steps": ["1", 1.5, 1], "conclusion_steps": []}', ([1], [])),
        ("no json here", None),
        ('{"verification_steps": [1]}', None),
        ('{"verification_steps": 1, "conclusion_steps": []}', None),
    ],
)
def test_parse_labels(answer: str, labels) -> None:
    assert parse_labels(answer, 3) == labels


def test_label_request_shows_steps_without_their_surrounding_whitespace() -> None:
    settings = params(ClaudeParams)
    request = label_request("Q?", ["\n\nFirst.\n", "So 4. "], settings)
    text = request["messages"][0]["content"][0]["text"]
    assert text.endswith("Steps:\n[0] First.\n\n[1] So 4.")
