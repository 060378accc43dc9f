"""answer_store: processes that share a store never send one request twice (claims), a dead
owner's claim is taken over, and a torn line leaves the store readable. The processes use the
real ``anthropic`` SDK against the stand-in server (``fake_batches``) in this process."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anthropic  # noqa: F401 (imported here, so that the lease below is not spent importing it)
import pytest
from fake_batches import FakeServer, FakeState
from tiny import params

from steerpipe.claude.answer_store import AnswerStore, Claims, owner_alive, store_lock
from steerpipe.claude.message_batches import ClaudeParams, request_id, run_batches

KEY = "sk-ant-test"


def request(i: int) -> dict[str, Any]:
    content = [{"type": "text", "text": f"question {i}"}]
    return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]}


def requests(ids: range) -> dict[str, dict[str, Any]]:
    return {request_id(request(i), "v1"): request(i) for i in ids}


def ok(cid: str, params: dict, attempt: int) -> tuple[str, str]:
    return "succeeded", f"answer to {params['messages'][0]['content'][0]['text']}"


def settings(store: Path, **options: float) -> ClaudeParams:
    fast = {"poll_seconds": 0.01, "max_poll_seconds": 0.05, "max_wait_seconds": 60.0}
    return params(ClaudeParams, store=str(store), max_rounds=3, **{**fast, **options})


def judge_at_once(url: str, store: str, ids: range, barrier: Any, out: Any) -> None:
    """One process of the concurrent test: wait for the others, then judge ``ids``."""
    os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_API_KEY"] = url, KEY
    barrier.wait()
    start = time.time()
    _, stats = run_batches(requests(ids), settings(Path(store)))
    out.put({**stats, "start": start, "end": time.time()})


@pytest.fixture()
def server():
    server = FakeServer(FakeState(answer=ok, polls_before_end=3))
    yield server
    server.stop()


def answer_lines(store: Path) -> list[str]:
    lines = (store / "answers.jsonl").read_text().splitlines()
    return [json.loads(line)["id"] for line in lines]


def test_processes_sharing_a_store_send_each_request_once(server, tmp_path) -> None:
    """Three processes start at once on overlapping requests (0-29, 10-39, 20-49): every id
    goes out in one batch only, and the store holds one answer per id."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    parts = [range(0, 30), range(10, 40), range(20, 50)]
    procs = [
        ctx.Process(target=judge_at_once, args=(server.url, str(tmp_path), ids, barrier, out))
        for ids in parts
    ]
    for p in procs:
        p.start()
    stats = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    attempts = server.state.attempts
    assert len(attempts) == 50 and set(attempts.values()) == {1}, attempts
    assert sum(s.get("requests_sent", 0) for s in stats) == 50
    assert max(s["start"] for s in stats) < min(s["end"] for s in stats)  # all at once
    ids = answer_lines(tmp_path)
    assert sorted(ids) == sorted(requests(range(50)))  # one answer per id
    assert all(s["unanswered"] == 0 for s in stats)


def test_a_dead_owners_claim_is_taken_over(server, tmp_path, monkeypatch) -> None:
    """A claim on this host whose process is gone binds nobody at once; another host's binds
    until its lease runs out; then the ids are claimed and sent, once."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    gone = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    gone.start()
    gone.join()
    dead = f"{socket.gethostname()}:{gone.pid}:0000"
    elsewhere = "another-host:1:0000"
    assert not owner_alive(dead) and owner_alive(elsewhere)
    first, second = requests(range(0, 5)), requests(range(5, 10))
    claims = Claims(tmp_path)
    with store_lock(tmp_path):
        claims.claim(list(first), dead, lease_s=3600)
        claims.claim(list(second), elsewhere, lease_s=2.0)
    assert set(claims.live()) == {elsewhere}
    claimed_at = datetime.now(timezone.utc)
    _, stats = run_batches({**first, **second}, settings(tmp_path))
    assert stats["requests_sent"] == 10 and stats["batches_created"] == 2
    assert set(server.state.attempts.values()) == {1} and len(server.state.attempts) == 10
    batches = sorted(server.state.batches.values(), key=lambda b: b["id"])
    assert {r[0] for r in batches[0]["results"]} == set(first)  # the dead owner's, at once
    assert {r[0] for r in batches[1]["results"]} == set(second)  # after the other's lease
    assert (batches[1]["created"] - claimed_at).total_seconds() >= 1.9
    assert claims.live() == {}  # and it released its own claims when done


def test_a_live_claim_is_waited_for_then_exits_non_zero(server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    held = requests(range(3))
    with store_lock(tmp_path):
        Claims(tmp_path).claim(list(held), "another-host:1:0000", lease_s=3600)
    from steerpipe.config import StageError

    with pytest.raises(StageError, match="3 request.s. still claimed by another process"):
        run_batches(held, settings(tmp_path, max_wait_seconds=0.3))
    assert server.state.requests_received == 0


def test_a_torn_line_leaves_the_store_readable(tmp_path) -> None:
    """A process killed mid-append leaves part of a line: it is skipped, and the next answer
    starts a line of its own."""
    store = AnswerStore(tmp_path)
    store.put({"id": "a", "status": "succeeded", "text": "1"})
    with open(tmp_path / "answers.jsonl", "a") as f:
        f.write('{"id": "b", "status": "succ')  # the kill
    again = AnswerStore(tmp_path)
    assert again.answers.keys() == {"a"}
    again.put({"id": "c", "status": "succeeded", "text": "3"})
    assert AnswerStore(tmp_path).answers.keys() == {"a", "c"}
    # an answer is written once, whoever collects it
    assert again.put_many([{"id": "a", "status": "succeeded", "text": "other"}]) == 0
    assert AnswerStore(tmp_path).get("a") == {"id": "a", "status": "succeeded", "text": "1"}
