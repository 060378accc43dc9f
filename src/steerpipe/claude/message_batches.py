"""Resumable, cached Message Batches: send each request once, collect every answer.

``BatchRunner.run(requests)`` takes ``{custom_id: message params}`` and leaves an answer for
every id it could get in the ``AnswerStore``. The order of work is what makes it safe to
interrupt at any moment:

1. ids already answered are never sent again (cache hits);
2. batches in the journal that are not yet collected are collected first;
3. journalled intents with no batch id (interrupted between create and journal) are
   reconciled with the batch list: an unjournalled batch of the same size created since is
   adopted; otherwise the intent is closed;
4. only then are new batches created, for the ids this process claims in the store (ids a
   live process has claimed are waited for, not sent: ``answer_store.Claims``), split under
   the API limits, each one's id journalled the moment it is known. Creates are not retried
   blindly (the SDK would retry a POST with no idempotency key and might make a duplicate):
   after a failed create the batch list is checked for the batch first;
5. polling backs off and renews the claims; only ``ended`` is final; ``errored`` results of a
   retryable type and ``expired``/``canceled`` ones are claimed and sent again in the next
   round, up to ``max_rounds``. Any process may collect a journalled batch; an answer is
   written once.

When ``max_wait_s`` passes, ``BatchesStillRunning`` says which batches are live (or which
requests another process holds); the next run resumes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from steerpipe.claude.answer_store import (
    AnswerStore,
    BatchJournal,
    Claims,
    owner_id,
    store_lock,
)
from steerpipe.config import StageError, check

if TYPE_CHECKING:
    import anthropic

MAX_REQUESTS = 100_000  # per batch, the API's limit
MAX_BYTES = 256_000_000  # per batch, under the API's 256 MB
RETRYABLE = {"rate_limit_error", "overloaded_error", "api_error", "timeout_error"}


class BatchesStillRunning(Exception):
    def __init__(self, batch_ids: list[str], claimed: int = 0) -> None:
        self.batch_ids = batch_ids
        what = (
            f"{len(batch_ids)} batch(es) still running ({', '.join(batch_ids)})"
            if batch_ids
            else f"{claimed} request(s) still claimed by another process"
        )
        super().__init__(
            f"{what}; they are journalled, and the next `dvc repro` resumes them without "
            "sending anything twice"
        )


def split_requests(
    requests: list[dict[str, Any]], max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES
) -> list[list[dict[str, Any]]]:
    """Consecutive chunks with at most ``max_requests`` requests and ``max_bytes`` of JSON."""
    chunks: list[list[dict[str, Any]]] = []
    size = 0
    for req in requests:
        n = len(json.dumps(req)) + 2
        if not chunks or len(chunks[-1]) >= max_requests or size + n > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(req)
        size += n
    return chunks


def request_id(params: dict[str, Any], prompt_version: str, prefix: str = "sj-") -> str:
    """A custom_id (at most 64 characters) that changes with anything that decides the answer."""
    key = json.dumps({"prompt_version": prompt_version, **params}, sort_keys=True)
    return prefix + hashlib.sha256(key.encode()).hexdigest()[: 64 - len(prefix)]


@dataclass(frozen=True)
class ClaudeParams:
    """Claude's settings and the batch runner's: params.yaml ``steps.claude`` (the step
    labeller), and the shared part of ``judge``. ``store`` holds answers and the journal,
    outside DVC's outputs; ``prompt_version`` is part of every request's cache key."""

    SECTION: ClassVar[str] = "steps.claude"
    model: str
    temperature: float
    max_tokens: int
    prompt_version: str
    store: str
    poll_seconds: float
    max_poll_seconds: float
    max_wait_seconds: float
    max_rounds: int

    def __post_init__(self) -> None:
        key = self.SECTION
        check(0 <= self.temperature <= 1, f"{key}.temperature", "in [0, 1]")
        check(self.max_tokens >= 1, f"{key}.max_tokens", "at least 1")
        check(self.poll_seconds > 0, f"{key}.poll_seconds", "positive")
        check(
            self.max_poll_seconds >= self.poll_seconds,
            f"{key}.max_poll_seconds",
            "at least poll_seconds",
        )
        check(self.max_wait_seconds > 0, f"{key}.max_wait_seconds", "positive")
        check(self.max_rounds >= 1, f"{key}.max_rounds", "at least 1")


class BatchRunner:
    def __init__(
        self,
        client: anthropic.Anthropic,
        store: AnswerStore,
        journal: BatchJournal,
        *,
        poll_s: float,
        max_poll_s: float,
        max_wait_s: float,
        max_rounds: int,
        max_requests: int = MAX_REQUESTS,
        id_prefix: str = "",
        log: Callable[[str], None] = print,
    ) -> None:
        self.client = client
        self.store = store
        self.journal = journal
        self.poll_s, self.max_poll_s, self.max_wait_s = poll_s, max_poll_s, max_wait_s
        self.max_rounds, self.max_requests = max_rounds, max_requests
        self.id_prefix = id_prefix
        self.log = log
        self.stats: Counter[str] = Counter()
        self.claims = Claims(store.folder)
        self.owner = owner_id()
        self.lease_s = max(120.0, 3 * max_poll_s)  # renewed while polling, every lease / 3
        self._renewed = 0.0

    def run(self, requests: dict[str, dict[str, Any]]) -> Counter[str]:
        self.deadline = time.monotonic() + self.max_wait_s
        self.stats["cache_hits"] += sum(i in self.store for i in requests)
        try:
            self._resume()
            rounds = 0
            while True:
                with store_lock(self.store.folder):
                    self.store.refresh()
                    missing = [i for i in requests if i not in self.store]
                    mine, theirs = self.claims.claim(missing, self.owner, self.lease_s)
                self._renewed = time.monotonic()
                if mine and rounds < self.max_rounds:
                    rounds += 1
                    reqs = [{"custom_id": i, "params": requests[i]} for i in mine]
                    chunks = split_requests(reqs, self.max_requests)
                    self._collect([self._create(chunk) for chunk in chunks])
                elif theirs:
                    self.stats["waited_for_others"] += len(theirs)
                    self._wait_for(list(theirs))
                else:
                    break
        finally:
            self.claims.release(self.owner)
        self.stats["unanswered"] = sum(i not in self.store for i in requests)
        return self.stats

    def _resume(self) -> None:
        """Collect the journal's open batches, and reconcile the intents that never got a
        batch id, except those of a live process, which is creating that batch now."""
        open_ids, orphans, known = self.journal.state()
        live = self.claims.live()
        for intent in orphans:
            if intent.get("owner") in live:
                continue
            adopted = self._find_created(intent, known)
            if adopted:
                self.journal.created(intent["nonce"], adopted)
                open_ids.append(adopted)
                known.add(adopted)  # two intents of one size must not adopt the same batch
            else:
                self.journal.resolved(intent["nonce"])
        self._collect(open_ids)

    def _renew(self) -> None:
        if time.monotonic() - self._renewed > self.lease_s / 3:
            self.claims.renew(self.owner, self.lease_s)
            self._renewed = time.monotonic()

    def _wait_for(self, ids: list[str]) -> None:
        """Until another process answers ``ids`` or stops holding them (its lease ran out, its
        process is gone): the next round claims what is still missing."""
        wait = self.poll_s
        while True:
            self.store.refresh()
            held = set().union(*self.claims.live().values())
            if all(i in self.store or i not in held for i in ids):
                return
            if time.monotonic() + wait > self.deadline:
                raise BatchesStillRunning([], claimed=sum(i not in self.store for i in ids))
            self._renew()
            time.sleep(wait)
            wait = min(self.max_poll_s, wait * 1.5)

    def _create(self, chunk: list[dict[str, Any]]) -> str:
        import anthropic

        intent = self.journal.intent(len(chunk), self.owner)
        quiet = self.client.with_options(max_retries=0)
        for attempt in range(4):
            try:
                batch = quiet.messages.batches.create(requests=chunk)  # type: ignore[arg-type]
                break
            except (
                anthropic.APIConnectionError,
                anthropic.InternalServerError,
                anthropic.RateLimitError,
            ) as e:
                adopted = self._find_created(intent, self.journal.state()[2])
                if adopted:  # the failed call made the batch after all
                    self.journal.created(intent["nonce"], adopted)
                    self.stats["requests_sent"] += len(chunk)
                    return adopted
                if attempt == 3:
                    self.journal.resolved(intent["nonce"])
                    raise
                self.log(f"batch create failed ({type(e).__name__}); retrying")
                time.sleep(min(self.max_poll_s, self.poll_s * 2**attempt))
        self.journal.created(intent["nonce"], batch.id)
        self.stats["batches_created"] += 1
        self.stats["requests_sent"] += len(chunk)
        self.log(f"created batch {batch.id} with {len(chunk)} requests")
        return batch.id

    def _find_created(self, intent: dict[str, Any], known: set[str]) -> str | None:
        """An unjournalled batch of the intent's size, created since the intent."""
        for batch in self.client.messages.batches.list(limit=100):
            if batch.created_at.timestamp() < intent["time"] - 300:
                break  # newest first; older batches cannot be this intent's
            counts = batch.request_counts
            total = (
                counts.processing
                + counts.succeeded
                + counts.errored
                + counts.canceled
                + counts.expired
            )
            if batch.id not in known and total == intent["n"]:
                return str(batch.id)
        return None

    def _collect(self, batch_ids: list[str]) -> None:
        live = list(dict.fromkeys(batch_ids))
        wait = self.poll_s
        while live:
            for batch_id in list(live):
                if self.client.messages.batches.retrieve(batch_id).processing_status == "ended":
                    self._harvest(batch_id)
                    live.remove(batch_id)
            if not live:
                break
            if time.monotonic() + wait > self.deadline:
                raise BatchesStillRunning(live)
            self._renew()
            time.sleep(wait)
            wait = min(self.max_poll_s, wait * 1.5)

    def _harvest(self, batch_id: str) -> None:
        records = []
        for item in self.client.messages.batches.results(batch_id):
            rid, result = item.custom_id, item.result
            if not rid.startswith(self.id_prefix) or rid in self.store:
                continue
            self.stats[result.type] += 1
            if result.type == "succeeded":
                msg = result.message
                text = "".join(getattr(b, "text", "") for b in msg.content)
                usage = {
                    "input_tokens": msg.usage.input_tokens,
                    "output_tokens": msg.usage.output_tokens,
                }
                self.stats["input_tokens"] += usage["input_tokens"]
                self.stats["output_tokens"] += usage["output_tokens"]
                records.append({"id": rid, "status": "succeeded", "text": text, "usage": usage})
            elif result.type == "errored":
                kind = result.error.error.type
                if kind not in RETRYABLE:
                    records.append({"id": rid, "status": "failed", "error": kind})
        self.store.put_many(records)  # what another collector wrote first stays
        self.journal.collected(batch_id)
        self.log(f"collected batch {batch_id}")


def run_batches(
    requests: dict[str, dict[str, Any]], settings: ClaudeParams
) -> tuple[AnswerStore, dict[str, int]]:
    """Answer ``requests`` through the store ``settings.store``; the client only when work
    remains.

    The client is the official one with its usual environment (``ANTHROPIC_API_KEY``,
    ``ANTHROPIC_BASE_URL``); the key is read by the SDK and never written anywhere.
    """
    folder = os.path.expanduser(settings.store)
    answers, journal = AnswerStore(Path(folder)), BatchJournal(Path(folder))
    open_ids, orphans, _ = journal.state()
    if all(i in answers for i in requests) and not open_ids and not orphans:
        return answers, {"cache_hits": len(requests), "requests_sent": 0, "unanswered": 0}
    if not os.environ.get("ANTHROPIC_API_KEY"):
        raise StageError(
            f"{settings.SECTION}: Claude needs ANTHROPIC_API_KEY in the environment; "
            "nothing was submitted"
        )
    import anthropic  # here, not at the top: the SDK takes seconds to import, rule runs skip it

    runner = BatchRunner(
        anthropic.Anthropic(),
        answers,
        journal,
        poll_s=settings.poll_seconds,
        max_poll_s=settings.max_poll_seconds,
        max_wait_s=settings.max_wait_seconds,
        max_rounds=settings.max_rounds,
    )
    try:
        stats = runner.run(requests)
    except BatchesStillRunning as e:
        raise StageError(str(e)) from e
    except (anthropic.APIConnectionError, anthropic.APIStatusError) as e:
        raise StageError(
            f"the Message Batches API failed ({type(e).__name__}); every batch created so far "
            f"is journalled in {folder}, and the next `dvc repro` resumes them"
        ) from e
    return answers, dict(stats)
