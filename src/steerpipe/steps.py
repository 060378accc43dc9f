"""The reasoning-step data set: schema, loading, and building it from the model's own traces.

Schema of ``immindich/reasoning-steps-labeled`` (the paper's data set): ``problem: str``,
``steps: list[str]``, ``verification_steps: list[int]``, ``conclusion_steps: list[int]``.

- ``load_rows(source)``: the hub data set by id (through ``datasets``), or a local Parquet file
  with the same schema.
- ``build_rows(...)``: the offline default. Problems come from a packaged ``reasoning-gym``
  task; the model writes its reasoning under its chat template; the text is split into steps
  on blank lines and labelled by the rule-based labeller in ``labels``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
from transformers import PreTrainedModel
from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import StageError
from steerpipe.generation import generate
from steerpipe.labels import label_steps
from steerpipe.prompts import chat_prompt_ids
from steerpipe.storage import load_table

SCHEMA = pa.schema(
    [
        ("problem", pa.string()),
        ("steps", pa.list_(pa.string())),
        ("verification_steps", pa.list_(pa.int64())),
        ("conclusion_steps", pa.list_(pa.int64())),
    ]
)
FIELDS = tuple(SCHEMA.names)
HUB_ID = "immindich/reasoning-steps-labeled"


def split_steps(text: str) -> list[str]:
    """Steps of a trace: the text before ``</think>`` split on blank lines, empty ones dropped."""
    text = text.split("</think>")[0]
    return [s.strip() for s in text.split("\n\n") if s.strip()]


def validate_rows(rows: list[dict[str, Any]]) -> None:
    """Every row has the four fields with the right types and step indices in range."""
    for r, row in enumerate(rows):
        missing = [f for f in FIELDS if row.get(f) is None]
        if missing:
            raise StageError(f"data set row {r}: missing field(s) {', '.join(missing)}")
        steps = row["steps"]
        if not isinstance(row["problem"], str) or not all(isinstance(s, str) for s in steps):
            raise StageError(f"data set row {r}: 'problem' and 'steps' must be strings")
        for field in ("verification_steps", "conclusion_steps"):
            for k in row[field]:
                if not isinstance(k, int) or not 0 <= k < len(steps):
                    raise StageError(
                        f"data set row {r}: {field} has index {k!r}, "
                        f"but the row has {len(steps)} steps"
                    )


def load_rows(source: str) -> list[dict[str, Any]]:
    """Rows from a local Parquet file, or from the hub data set ``source`` (split ``train``)."""
    rows = load_table(source, "train", FIELDS, "steps.source")
    validate_rows(rows)
    return rows


def gym_problems(task: str, n: int, seed: int) -> list[str]:
    """``n`` questions from a packaged reasoning-gym task, seeded."""
    import reasoning_gym

    try:
        ds = reasoning_gym.create_dataset(task, size=n, seed=seed)
    except Exception as e:  # reasoning-gym raises plain errors for unknown task names
        raise StageError(f"steps.task {task!r}: reasoning-gym cannot build it ({e})") from e
    return [str(ds[i]["question"]) for i in range(n)]


def build_rows(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    problems: list[str],
    *,
    instruction: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    batch_size: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Let the model reason on each problem and label its steps.

    The ``problem`` column holds the whole user message the model saw (instruction and
    problem), so that ``prompts.reconstruct_prompt`` rebuilds exactly the context of each step.
    A trace cut off by ``max_new_tokens`` loses its last, unfinished step.
    """
    messages = [instruction + p for p in problems]
    prompts = [chat_prompt_ids(tokenizer, m) for m in messages]
    outs = generate(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    eos = set(tokenizer.all_special_ids)
    rows = []
    for message, out in zip(messages, outs, strict=True):
        finished = bool(out) and out[-1] in eos
        steps = split_steps(str(tokenizer.decode(out, skip_special_tokens=True)))
        if not finished:
            steps = steps[:-1]
        verification, conclusion = label_steps(steps)
        rows.append(
            {
                "problem": message,
                "steps": steps,
                "verification_steps": verification,
                "conclusion_steps": conclusion,
            }
        )
    return rows


# The original labelled steps with Claude; its labelling prompt is not in the notebook, so
# this one asks for the same JSON answer. Its version is part of every request's cache key.
LABEL_PROMPT_VERSION = "steps-v1"
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


def label_request(problem: str, steps: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    from steerpipe.batches import DEFAULT_MODEL

    numbered = "\n\n".join(f"[{i}] {s}" for i, s in enumerate(steps))
    prompt = LABEL_PROMPT.replace("{problem}", problem).replace("{steps}", numbered)
    return {
        "model": settings.get("model", DEFAULT_MODEL),
        "max_tokens": int(settings.get("max_tokens", 1000)),
        "temperature": float(settings.get("temperature", 0.0)),
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


def label_rows_with_claude(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Replace the rows' labels with Claude's, through the cached, resumable batch runner.

    Rows whose answer cannot be had or parsed keep no labels; the returned stats count them.
    """
    from steerpipe.batches import DEFAULT_STORE, request_id, run_batches, runner_options

    version = str(settings.get("prompt_version", LABEL_PROMPT_VERSION))
    params = [label_request(r["problem"], r["steps"], settings) for r in rows]
    ids = [request_id(p, version, prefix="sl-") for p in params]
    store, stats = run_batches(
        dict(zip(ids, params, strict=True)),
        settings.get("store", DEFAULT_STORE),
        **runner_options(settings),
    )
    unparsed = unanswered = 0
    for row, rid in zip(rows, ids, strict=True):
        record = store.get(rid)
        labels = None
        if record is None or record["status"] != "succeeded":
            unanswered += 1
        else:
            labels = parse_labels(record["text"], len(row["steps"]))
            unparsed += labels is None
        row["verification_steps"], row["conclusion_steps"] = labels or ([], [])
    return {**stats, "unparsed": unparsed, "unanswered": unanswered}
