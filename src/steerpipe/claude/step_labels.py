"""Labelling the steps data set with Claude (``steps.labeller: anthropic``), as the original did.

Each problem's numbered steps go to Claude through the cached, resumable batch runner in
``message_batches``; the answer is JSON with the indices of verification and conclusion steps.
"""

from __future__ import annotations

import json
import re
from typing import Any

from steerpipe.claude.message_batches import ClaudeParams, request_id, run_batches

# The original labelled steps with Claude; its labelling prompt is not in the notebook, so
# this one asks for the same JSON answer. Change steps.claude.prompt_version with it: the
# version is part of every request's cache key.
LABEL_PROMPT = """Below is a language model's reasoning on a problem, split into numbered steps.

List the indices of the steps in which the model verifies work it has already done (for \
example "Wait, let me double-check..." or "Let me verify that..."), and of the steps in which \
the model concludes that it has its final answer (for example "Therefore, the answer is..." or \
"I think I'm confident...").

Answer with JSON only, in this form: {"verification_steps": [...], "conclusion_steps": [...]}

Problem:
{problem}

Steps:
{steps}"""

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def label_request(problem: str, steps: list[str], settings: ClaudeParams) -> dict[str, Any]:
    # steps keep the whitespace around them (so that prompts rebuild the trace); not shown here
    numbered = "\n\n".join(f"[{i}] {s.strip()}" for i, s in enumerate(steps))
    prompt = LABEL_PROMPT.replace("{problem}", problem).replace("{steps}", numbered)
    return {
        "model": settings.model,
        "max_tokens": settings.max_tokens,
        "temperature": settings.temperature,
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
    }


def parse_labels(answer: str, n_steps: int) -> tuple[list[int], list[int]] | None:
    """(verification_steps, conclusion_steps) from a JSON answer (prose or fences around it
    are tolerated; indices out of range or not integers are dropped), or None."""
    match = _JSON_OBJECT.search(answer)
    if not match:
        return None
    try:
        obj = json.loads(match.group(0))
        lists = [obj["verification_steps"], obj["conclusion_steps"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    if not all(isinstance(x, list) for x in lists):
        return None
    v, c = (sorted({k for k in x if isinstance(k, int) and 0 <= k < n_steps}) for x in lists)
    return v, c


Labels = tuple[list[int], list[int]]


def claude_labels(
    rows: list[dict[str, Any]], settings: ClaudeParams
) -> tuple[list[Labels | None], dict[str, Any]]:
    """Claude's (verification_steps, conclusion_steps) of each row (``problem``, ``steps``),
    None where its answer cannot be had or parsed, through the cached, resumable batch runner;
    and the runner's counts, with the unanswered and unparsed."""
    params = [label_request(r["problem"], r["steps"], settings) for r in rows]
    ids = [request_id(p, settings.prompt_version, prefix="sl-") for p in params]
    store, stats = run_batches(dict(zip(ids, params, strict=True)), settings)
    labels: list[Labels | None] = []
    unparsed = unanswered = 0
    for row, rid in zip(rows, ids, strict=True):
        record = store.get(rid)
        if record is None or record["status"] != "succeeded":
            unanswered += 1
            labels.append(None)
            continue
        labels.append(parse_labels(record["text"], len(row["steps"])))
        unparsed += labels[-1] is None
    return labels, {**stats, "unparsed": unparsed, "unanswered": unanswered}


def label_rows_with_claude(rows: list[dict[str, Any]], settings: ClaudeParams) -> dict[str, Any]:
    """Replace the rows' labels with Claude's; rows whose answer cannot be had or parsed keep
    no labels (the returned counts say how many)."""
    labels, stats = claude_labels(rows, settings)
    for row, got in zip(rows, labels, strict=True):
        row["verification_steps"], row["conclusion_steps"] = got or ([], [])
    return stats
