"""The batch judge's memory on disk: answers by request id, and a journal of batches.

Both live outside DVC's outputs (``judge.store``, default ``~/.cache/steerpipe/judge``),
because DVC deletes a stage's outputs when the stage starts: answers paid for must survive
re-runs, sweeps and interruptions. Both are append-only JSON lines, written under an exclusive
lock and fsynced line by line, so an interrupted process loses at most the line it was
writing (a torn last line is skipped on reading) and parallel experiments can share them.

Journal events: ``intent`` (about to create a batch of ``n`` requests), ``created`` (the batch
id, written the moment the API returns it), ``resolved`` (an intent that made no batch),
``collected`` (the batch's results are in the answers).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any


class JsonlLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by an interruption
        return records


class AnswerStore:
    """Final answers by request id: ``succeeded`` (with text and usage) or ``failed``."""

    def __init__(self, folder: Path) -> None:
        self.log = JsonlLog(folder / "answers.jsonl")
        self.answers = {r["id"]: r for r in self.log.read()}

    def __contains__(self, request_id: str) -> bool:
        return request_id in self.answers

    def get(self, request_id: str) -> dict[str, Any] | None:
        return self.answers.get(request_id)

    def put(self, record: dict[str, Any]) -> None:
        self.log.append(record)
        self.answers[record["id"]] = record


class BatchJournal:
    def __init__(self, folder: Path) -> None:
        self.log = JsonlLog(folder / "batches.jsonl")

    def intent(self, n: int) -> dict[str, Any]:
        event = {"event": "intent", "nonce": os.urandom(8).hex(), "n": n, "time": time.time()}
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
        events = self.log.read()
        created = [e for e in events if e["event"] == "created"]
        known = {e["batch_id"] for e in created}
        done = {e["batch_id"] for e in events if e["event"] == "collected"}
        with_batch = {e["nonce"] for e in events if e["event"] in ("created", "resolved")}
        open_ids = list(dict.fromkeys(e["batch_id"] for e in created if e["batch_id"] not in done))
        orphans = [e for e in events if e["event"] == "intent" and e["nonce"] not in with_batch]
        return open_ids, orphans, known
