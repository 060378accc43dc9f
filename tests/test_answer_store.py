"""answer_store: processes that share a store never send one request twice (claims), on one
host or on several whose shared file system does not enforce ``flock``; a dead owner's claim,
and a dead holder's lock, are taken over; a torn line leaves the store readable. The processes
use the real ``anthropic`` SDK against the stand-in server (``fake_batches``) in this process;
this module imports no torch, so that they start in about a second."""

from __future__ import annotations

import dataclasses
import fcntl
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
from flufl.lock import _lockfile

from steerpipe.claude.answer_store import (
    AnswerStore,
    Claims,
    LinkLock,
    locked,
    owner_alive,
    store_lock,
)
from steerpipe.claude.message_batches import ClaudeParams, request_id, run_batches
from steerpipe.config import StageError, load

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
    # tiny.params, written out: importing tiny loads torch, 4 s in each spawned process
    judge = load(ClaudeParams, Path(__file__).resolve().parents[1] / "params.yaml")
    return dataclasses.replace(judge, store=str(store), max_rounds=3, **{**fast, **options})


def pose_as(host: str) -> None:
    """This process, as one of machine ``host`` (claims' owners and flufl's lock files)."""
    socket.gethostname = socket.getfqdn = lambda *args: host  # type: ignore[assignment]


def judge_at_once(
    url: str, store: str, ids: range, barrier: Any, out: Any, host: str | None = None
) -> None:
    """One process of the concurrent test: wait for the others, then judge ``ids``. With a
    ``host``, as a process of that machine whose shared folder enforces no ``flock`` (many NFS
    mounts), on a file system slow enough that two claims' read-then-write steps overlap."""
    if host is not None:
        fcntl.flock = lambda *args: None  # type: ignore[assignment]
        pose_as(host)
        live = Claims.live

        def slow_live(self: Claims, now: float | None = None) -> dict[str, set[str]]:
            held = live(self, now)
            time.sleep(0.3)  # between reading the claims and writing this process's own
            return held

        Claims.live = slow_live  # type: ignore[method-assign]
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


@pytest.mark.parametrize("hosts", [False, True], ids=["one-host", "three-hosts-no-flock"])
def test_processes_sharing_a_store_send_each_request_once(server, tmp_path, hosts) -> None:
    """Three processes start at once on overlapping requests (0-29, 10-39, 20-49): every id
    goes out in one batch only, and the store holds one answer per id. As three hosts without
    ``flock``, only the link lock keeps them apart: with ``locked`` holding ``flock`` alone,
    30 of the 50 ids went out two or three times."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    parts = [range(0, 30), range(10, 40), range(20, 50)]
    procs = [
        ctx.Process(
            target=judge_at_once,
            args=(server.url, str(tmp_path), ids, barrier, out, f"node-{k}" if hosts else None),
        )
        for k, ids in enumerate(parts)
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


def hold_and_die(path: str, host: str | None) -> None:
    """Take the lock at ``path`` and exit without letting it go, as a killed process does."""
    if host is not None:
        pose_as(host)
    lock = LinkLock(f"{path}.link", lifetime=2)
    lock.lock()
    os._exit(0)


@pytest.mark.parametrize("host", [None, "another-host"])
def test_a_dead_holders_lock_is_taken_over(tmp_path, monkeypatch, host) -> None:
    """A link lock left by a dead process of this host is broken at once; another host's only
    when its lifetime (2 s here) is over, since its process cannot be seen from here."""
    monkeypatch.setattr(_lockfile, "CLOCK_SLOP", _lockfile.timedelta(0))  # flufl's 10 s
    path = tmp_path / "locks" / "store.lock"
    path.parent.mkdir()
    dead = multiprocessing.get_context("spawn").Process(target=hold_and_die, args=(path, host))
    dead.start()
    dead.join()
    link = Path(f"{path}.link")
    assert link.exists() and link.read_text().split("|")[2] == str(dead.pid)
    start = time.monotonic()
    with locked(path):
        waited = time.monotonic() - start
        assert link.read_text().split("|")[2] == str(os.getpid())
    assert not link.exists()  # and let go after
    if host is None:
        assert waited < 1.0
    else:
        assert waited > 0.5  # the lease's end, in whole seconds of mtime


def test_a_folder_without_hard_links_is_one_readable_error(tmp_path, monkeypatch) -> None:
    def no_links(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted")  # what s3fs and gcsfuse answer

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(StageError, match=r"cannot lock the store there \(Operation not perm"):
        AnswerStore(tmp_path).put({"id": "a", "status": "succeeded", "text": "1"})
    assert not (tmp_path / "answers.jsonl").exists()
