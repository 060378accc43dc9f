"""The batch judge's memory on disk: answers by request id, a journal of batches, and claims
on the requests in flight.

All three live outside DVC's outputs (``judge.store``, default ``~/.cache/steerpipe/judge``),
because DVC deletes a stage's outputs when the stage starts: answers paid for must survive
re-runs, sweeps and interruptions. All are append-only JSON lines, written under a lock and
fsynced line by line, so an interrupted process loses at most the line it was writing (a torn
line is skipped on reading, and the next append starts on a new line).

Parallel processes (queued experiments, ``dvc queue start -j N``, Ray tasks on several machines
whose ``judge.store`` is one folder on shared storage) share one store. A process claims the ids
it is about to send, under the store's lock, with its owner (host, process id) and a lease it
renews while it waits; another process sends none of them while the owner is live, and waits
for their answers instead. A claim whose lease ran out, or whose owner's process is gone (same
host), or that its owner released, binds nobody.

A lock (``locked``) is two: ``flock``, which serializes this host's processes and which the
kernel releases when its holder dies, and flufl.lock's lock (a claim file hard-linked to the
lock file; DVC's ``core.hardlink_lock`` is the same lock), which serializes hosts on a shared
file system that does not enforce ``flock`` across them, as many NFS mounts do not: ``link(2)``
is atomic there. A link lock whose holder died is broken at once on its own host, and after
its lifetime (``LOCK_LIFETIME_S`` plus flufl's 10 s of clock slop) from another.

Journal events: ``intent`` (about to create a batch of ``n`` requests, by ``owner``),
``created`` (the batch id, written the moment the API returns it), ``resolved`` (an intent
that made no batch), ``collected`` (the batch's results are in the answers).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from flufl.lock import Lock, LockState

from steerpipe.config import StageError

# The longest a holder keeps a lock: its reads and appends take milliseconds.
LOCK_LIFETIME_S = 30


class LinkLock(Lock):
    """flufl.lock's NFS-safe lock, retried every few milliseconds (flufl waits 0-2 s, too long
    for locks held for milliseconds), taking over at once a lock whose holder ran on this host
    and is gone. Only one process of a host waits for it at a time (``locked`` holds ``flock``
    first), so two processes of one host never break the same dead holder's lock."""

    def _sleep(self) -> None:
        if self.state is LockState.stale:
            self._break()
        time.sleep(random.uniform(0.002, 0.02))


_link_locks: dict[tuple[str, int], LinkLock] = {}


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path`` (``flock``) and then ``path.link`` (``LinkLock``): against this host's
    processes and other hosts' on a shared folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (f"{path}.link", os.getpid())  # a forked child must not reuse its parent's claim file
    if key not in _link_locks:  # flufl asks for the host's full name once per lock made
        _link_locks[key] = LinkLock(key[0], lifetime=LOCK_LIFETIME_S)
    link = _link_locks[key]
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            try:
                link.lock()
            except OSError as e:  # no hard links here (object-store mounts): say so in one line
                raise StageError(
                    f"{path.parent.parent}: cannot lock the store there ({e.strerror}); it needs"
                    " a file system with hard links (docs/judge.md, 'Across machines')"
                ) from e
            try:
                yield
            finally:
                link.unlock(unconditionally=True)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class JsonlLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        lock = locked(self.path.parent / "locks" / f"{self.path.name}.lock")
        with lock, open(self.path, "ab+") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a torn line: this record starts a new one
                    text = "\n" + text
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())  # on the server before the lock is let go (closed first)

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


def store_lock(folder: Path) -> AbstractContextManager[None]:
    """The store's lock, for a read-then-write step (claims, answers written once)."""
    return locked(folder / "locks" / "store.lock")


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
