"""The batch judge's memory on disk: answers by request id, a journal of batches, and claims
on the requests in flight.

All three live outside DVC's outputs (``judge.store``, default ``~/.cache/steerpipe/judge``),
because DVC deletes a stage's outputs when the stage starts: answers paid for must survive
re-runs, sweeps and interruptions. All are append-only JSON lines, written under an exclusive
lock and fsynced line by line, so an interrupted process loses at most the line it was
writing (a torn line is skipped on reading, and the next append starts on a new line).

Parallel processes (queued experiments, ``dvc queue start -j N``) share one store. A process
claims the ids it is about to send, under the store's lock (``store.lock``), with its owner
(host, process id) and a lease it renews while it waits; another process sends none of them
while the owner is live, and waits for their answers instead. A claim whose lease ran out, or
whose owner's process is gone (same host), or that its owner released, binds nobody.

Journal events: ``intent`` (about to create a batch of ``n`` requests, by ``owner``),
``created`` (the batch id, written the moment the API returns it), ``resolved`` (an intent
that made no batch), ``collected`` (the batch's results are in the answers).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class JsonlLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        with open(self.path, "ab+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":  # a torn line: this record starts a new one
                        text = "\n" + text
                f.write(text.encode())
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def read(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The records from byte ``offset`` on, and the offset after the last whole line."""
        if not self.path.exists():
            return [], offset
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        records = []
        for line in data[:end].splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by an interruption
        return records, offset + end


@contextmanager
def store_lock(folder: Path) -> Iterator[None]:
    """The store's exclusive lock, for a read-then-write step (claims, answers written once)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "store.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class AnswerStore:
    """Final answers by request id: ``succeeded`` (with text and usage) or ``failed``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = JsonlLog(folder / "answers.jsonl")
        self.answers: dict[str, dict[str, Any]] = {}
        self._offset = 0
        self.refresh()

    def refresh(self) -> None:
        """Read the answers other processes wrote since the last read."""
        records, self._offset = self.log.read(self._offset)
        for r in records:
            self.answers.setdefault(r["id"], r)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self.answers

    def get(self, request_id: str) -> dict[str, Any] | None:
        return self.answers.get(request_id)

    def put(self, record: dict[str, Any]) -> None:
        self.put_many([record])

    def put_many(self, records: list[dict[str, Any]]) -> int:
        """Write the answers no process has written yet (one answer per id); how many."""
        with store_lock(self.folder):
            self.refresh()
            new = [r for r in records if r["id"] not in self.answers]
            if new:
                self.log.append_many(new)
                self.refresh()
        return len(new)


def owner_id() -> str:
    """This process, as a claim's owner: host, process id and a nonce (one per runner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def owner_alive(owner: str) -> bool:
    """False only when the owner ran on this host and its process is gone."""
    host, pid, _ = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's process: its lease decides
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    """Request ids in flight, by owner (``claims.jsonl``): ``claim``, ``renew``, ``release``.
    Read and claimed under the store's lock, so that two processes never claim one id."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = JsonlLog(folder / "claims.jsonl")

    def live(self, now: float | None = None) -> dict[str, set[str]]:
        """The live owners' claimed ids."""
        now = time.time() if now is None else now
        ids: dict[str, set[str]] = {}
        until: dict[str, float] = {}
        released: set[str] = set()
        for e in self.log.read()[0]:
            owner = e["owner"]
            if e["event"] == "release":
                released.add(owner)
                continue
            until[owner] = max(until.get(owner, 0.0), e["until"])
            ids.setdefault(owner, set()).update(e.get("ids", []))
        return {
            o: i for o, i in ids.items() if o not in released and until[o] > now and owner_alive(o)
        }

    def claim(self, ids: list[str], owner: str, lease_s: float) -> tuple[list[str], dict[str, str]]:
        """Call under ``store_lock``. Claims the ids no other live owner holds: (those, in
        order; the others with their owner)."""
        held = {i: o for o, claimed in self.live().items() if o != owner for i in claimed}
        mine = [i for i in ids if i not in held]
        if mine:
            self.log.append({"event": "claim", "owner": owner, "ids": mine,
                             "until": time.time() + lease_s})  # fmt: skip
        return mine, {i: held[i] for i in ids if i in held}

    def renew(self, owner: str, lease_s: float) -> None:
        self.log.append({"event": "renew", "owner": owner, "until": time.time() + lease_s})

    def release(self, owner: str) -> None:
        self.log.append({"event": "release", "owner": owner})


class BatchJournal:
    def __init__(self, folder: Path) -> None:
        self.log = JsonlLog(folder / "batches.jsonl")

    def intent(self, n: int, owner: str = "") -> dict[str, Any]:
        nonce = os.urandom(8).hex()
        event = {"event": "intent", "nonce": nonce, "n": n, "time": time.time(), "owner": owner}
        self.log.append(event)
        return event

    def created(self, nonce: str, batch_id: str) -> None:
        self.log.append({"event": "created", "nonce": nonce, "batch_id": batch_id})

    def resolved(self, nonce: str) -> None:
        """An intent that, checked against the batch list, made no batch."""
        self.log.append({"event": "resolved", "nonce": nonce})

    def collected(self, batch_id: str) -> None:
        self.log.append({"event": "collected", "batch_id": batch_id})

    def state(self) -> tuple[list[str], list[dict[str, Any]], set[str]]:
        """(open batch ids, intents with no batch id yet, every journalled batch id)."""
        events = self.log.read()[0]
        created = [e for e in events if e["event"] == "created"]
        known = {e["batch_id"] for e in created}
        done = {e["batch_id"] for e in events if e["event"] == "collected"}
        with_batch = {e["nonce"] for e in events if e["event"] in ("created", "resolved")}
        open_ids = list(dict.fromkeys(e["batch_id"] for e in created if e["batch_id"] not in done))
        orphans = [e for e in events if e["event"] == "intent" and e["nonce"] not in with_batch]
        return open_ids, orphans, known
