"""A local fake of the Message Batches API, for the real ``anthropic`` SDK over loopback.

It speaks the HTTP API the SDK uses (create, retrieve, list newest first, results as JSONL,
cancel) and misbehaves on purpose: results come back shuffled; a batch stays ``in_progress``
for a few polls, then ``canceling`` for one, before it ends; the answer function can make a
request succeed, error, expire or be canceled; the first create can fail with a 500 *after*
making the batch; and the server can be stopped mid-run and started again on the same state.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (custom_id, params, attempt) -> ("succeeded", text) | ("errored", error type) | ("expired", "")
Answer = Callable[[str, dict[str, Any], int], tuple[str, str]]


def is_fluency(params: dict[str, Any]) -> bool:
    """Is this request the fluency rubric's (``judge.FLUENCY_PROMPT``), not the category's?"""
    return "[Text Start]" in params["messages"][0]["content"][0]["text"]


def completion(params: dict[str, Any]) -> str:
    """The text under judgement, taken back out of the original judge prompt or the fluency
    rubric."""
    prompt = params["messages"][0]["content"][0]["text"]
    if is_fluency(params):
        return prompt.split("[Text Start]\n", 1)[1].rsplit("\n[Text End]", 1)[0]
    return prompt.split("Here is the output of the language model:")[1].strip()


def rule_answer(cid: str, params: dict[str, Any], attempt: int) -> tuple[str, str]:
    """Answer as the offline rule judge would, so both backends must agree; a fluency rating
    of 0 for a text the degenerate rule flags by its text alone, else 2."""
    from steerpipe.steering.labels import classify_opening

    text = completion(params)
    if is_fluency(params):
        return "succeeded", f"Reads as it reads. Rating: [[{0 if text_degenerate(text) else 2}]]"
    return "succeeded", str(classify_opening(text))


def text_degenerate(text: str) -> bool:
    """The degenerate rule of the repository's params.yaml, on the text alone (no NLL)."""
    from tiny import params

    from steerpipe.steering.quality import QualityParams, judge_quality

    return bool(judge_quality(text, None, params(QualityParams))["degenerate"])


@dataclass
class FakeState:
    answer: Answer
    polls_before_end: int = 2
    fail_first_create: bool = False
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    requests_received: int = 0
    statuses: dict[str, list[str]] = field(default_factory=dict)  # what each poll answered
    results_read_at: dict[str, str] = field(default_factory=dict)  # status when results read
    seen_keys: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            batch_id = f"msgbatch_{len(self.batches):04d}"
            results = []
            for req in requests:
                cid = req["custom_id"]
                self.attempts[cid] = self.attempts.get(cid, 0) + 1
                kind, value = self.answer(cid, req["params"], self.attempts[cid])
                results.append((cid, req["params"], kind, value))
            self.requests_received += len(requests)
            now = datetime.now(timezone.utc)
            self.batches[batch_id] = {
                "id": batch_id,
                "created": now,
                "polls": 0,
                "results": results,
            }
            return self.batches[batch_id]


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def batch_json(b: dict[str, Any], base: str) -> dict[str, Any]:
    ended = b["polls"] > b.get("polls_before_end", 0)
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    for _, _, kind, _ in b["results"]:
        counts[kind if ended else "processing"] += 1
    # the last poll before the end says "canceling", which is not final either
    canceling = not ended and b["polls"] == b.get("polls_before_end", 0) and b["polls"] > 1
    status = "ended" if ended else "canceling" if canceling else "in_progress"
    return {
        "id": b["id"],
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "created_at": _iso(b["created"]),
        "expires_at": _iso(b["created"] + timedelta(days=1)),
        "ended_at": _iso(datetime.now(timezone.utc)) if ended else None,
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": f"{base}/v1/messages/batches/{b['id']}/results" if ended else None,
    }


def result_json(cid: str, params: dict[str, Any], kind: str, value: str) -> dict[str, Any]:
    if kind == "succeeded":
        prompt = params["messages"][0]["content"][0]["text"]
        message = {
            "id": f"msg_{cid[-8:]}",
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": [{"type": "text", "text": value}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(prompt) // 4, "output_tokens": 2},
        }
        return {"custom_id": cid, "result": {"type": "succeeded", "message": message}}
    if kind == "errored":
        error = {"type": "error", "error": {"type": value, "message": "fake"}}
        return {"custom_id": cid, "result": {"type": "errored", "error": error}}
    return {"custom_id": cid, "result": {"type": kind}}


class FakeServer:
    def __init__(self, state: FakeState) -> None:
        self.state = state
        self._failed_once = False
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                state = server.state
                auth = self.headers.get("x-api-key") or self.headers.get("authorization", "")
                state.seen_keys.add(auth.removeprefix("Bearer "))
                body = json.loads(self.rfile.read(int(self.headers["content-length"])) or b"{}")
                if self.path == "/v1/messages/batches":
                    b = state.create(body["requests"])
                    b["polls_before_end"] = state.polls_before_end
                    if state.fail_first_create and not server._failed_once:
                        server._failed_once = True  # the batch exists, the caller hears 500
                        self._send(
                            500,
                            {"type": "error", "error": {"type": "api_error", "message": "boom"}},
                        )
                        return
                    self._send(200, batch_json(b, server.url))
                elif self.path.endswith("/cancel"):
                    b = state.batches[self.path.split("/")[-2]]
                    self._send(200, batch_json(b, server.url))
                else:
                    self._send(404, {"type": "error", "error": {"type": "not_found_error"}})

            def do_GET(self) -> None:  # noqa: N802
                state = server.state
                path = self.path.split("?")[0]
                parts = path.strip("/").split("/")
                if path == "/v1/messages/batches":
                    newest = sorted(state.batches.values(), key=lambda b: b["id"], reverse=True)
                    data = [batch_json(b, server.url) for b in newest]
                    self._send(
                        200,
                        {
                            "data": data,
                            "has_more": False,
                            "first_id": data[0]["id"] if data else None,
                            "last_id": data[-1]["id"] if data else None,
                        },
                    )
                elif len(parts) == 4 and parts[3] in state.batches:
                    b = state.batches[parts[3]]
                    b["polls"] += 1
                    body = batch_json(b, server.url)
                    state.statuses.setdefault(b["id"], []).append(body["processing_status"])
                    self._send(200, body)
                elif len(parts) == 5 and parts[4] == "results":
                    b = state.batches[parts[3]]
                    state.results_read_at[b["id"]] = state.statuses[b["id"]][-1]
                    rows = [result_json(*r) for r in b["results"]]
                    random.Random(b["id"]).shuffle(rows)
                    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    self._send(200, text, "application/binary")
                else:
                    self._send(404, {"type": "error", "error": {"type": "not_found_error"}})

        return Handler
