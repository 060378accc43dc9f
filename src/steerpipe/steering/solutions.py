"""Full solutions of held-out problems, with and without the steering vector, and what each shows.

The solve stages (``dvc repro solve_report``) ask what the proxies of experiment A leave open:
pushed to conclude, does the model finish sooner, and does it get more or fewer answers right?

- ``SolveParams``: params.yaml ``solve``: ``problems`` (``ProblemParams``), ``generation``
  (``WritingParams``), ``coefficients`` and ``baseline_instruction``, so that each stage
  depends on its part only.
- ``load_problems``: the held-out problems. ``source: gym`` (default) draws instances of
  a reasoning-gym task (``task``, the steps data set's by default) with their own seed;
  a hub data set id or a local Parquet file gives ``problem_column`` / ``answer_column``
  (MATH-500's ``problem`` / ``answer``, GSM8K's ``question`` / ``answer``). Either way a
  problem whose text is in the steps data set is left out: the vector never saw it; and a
  gym task's repeats are left out, so that every problem is a new one.
- ``solve``: every problem solved ``n_samples`` times under each ``Condition`` (a steer or
  none, a request after the problem or none), all in one batched ``generation.generate``
  call with the KV cache and the hook on every token. Row
  ``problem x n_samples + sample`` draws the same noise under every condition, so control and
  steered solutions of one problem and sample are paired (common random numbers): what
  differs between them is the vector's doing. The instruction baseline (``ask``: the
  ``baseline_instruction`` after each problem, in the same user message, through the chat
  template) is paired the same way: would asking have done what the vector does?
- ``score``: per solution, the answer (``answers``), whether it is right, its length, the
  tokens before its first conclusion-like step and its number of verification-like steps
  (the labeller's patterns, ``labels``, on each line and sentence: ``step_starts``).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import StageError, check
from steerpipe.lm.chat import chat_prompt_ids
from steerpipe.lm.generation import generate
from steerpipe.lm.hooks import Steer
from steerpipe.lm.offsets import tokens_before
from steerpipe.lm.scoring import continuation_nll
from steerpipe.steering.answers import extract_answer, gym_checker, math_equal, reference_answer
from steerpipe.steering.labels import CONCLUDING, VERIFYING, classify_opening
from steerpipe.steering.sampling import check_sampling
from steerpipe.storage import load_table

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel

# a reasoning-gym task's setting: a number, a flag, a name, or a list of them
GymSetting = bool | int | float | str | list[int] | list[float] | list[str]


@dataclass(frozen=True)
class ProblemParams:
    """params.yaml ``solve.problems``: which held-out problems (``solve_problems``)."""

    SECTION: ClassVar[str] = "solve.problems"
    source: str  # gym (reasoning-gym's task) | a hub data set id | path/to.parquet
    task: str  # source gym: a reasoning-gym task
    config: dict[str, GymSetting] | None  # source gym: the task's settings (digits, terms, ...)
    split: str  # of a hub data set
    problem_column: str
    answer_column: str
    n: Literal["all"] | int
    seed: int  # gym: the task's seed; else a seeded shuffle

    def __post_init__(self) -> None:
        check(self.n == "all" or self.n >= 1, "solve.problems.n", "all or >= 1")
        check(
            not self.config or self.source == "gym",
            "solve.problems.config",
            "null or empty unless source is gym",
        )


@dataclass(frozen=True)
class WritingParams:
    """params.yaml ``solve.generation``: how every condition's solutions are written."""

    SECTION: ClassVar[str] = "solve.generation"
    instruction: str  # put before each problem (the default: the steps data set's)
    n_samples: int
    max_new_tokens: int  # the token limit of a solution
    temperature: float
    top_p: float
    batch_size: int
    seed: int  # of the sampling noise, the same under every condition

    def __post_init__(self) -> None:
        check(self.n_samples >= 1, "solve.generation.n_samples", "at least 1")
        check_sampling(self, self.SECTION)


@dataclass(frozen=True)
class SolveParams:
    """params.yaml ``solve``: the problems, how solutions are written, the coefficients."""

    SECTION: ClassVar[str] = "solve"
    problems: ProblemParams
    generation: WritingParams
    coefficients: list[float]  # steered conditions, in steer.scale's units (0 is control)
    baseline_instruction: str | None  # the instruction baseline's request (None: no baseline)

    def __post_init__(self) -> None:
        check(
            self.baseline_instruction is None or bool(self.baseline_instruction.strip()),
            "solve.baseline_instruction",
            "null or a text",
        )
        c = self.coefficients
        check(bool(c), "solve.coefficients", "a non-empty list")
        check(0.0 not in c, "solve.coefficients", "non-zero (0 is control, solve_control's)")
        check(len(set(c)) == len(c), "solve.coefficients", "without repeats")


def load_problems(p: ProblemParams, seen: list[str]) -> list[dict[str, Any]]:
    """The problems (``index``, ``problem``, ``answer``, ``entry``: a reasoning-gym entry as
    JSON, or ``""``), none of whose text is in ``seen`` (the steps data set's problems)."""

    def unseen(text: str) -> bool:
        return not any(text.strip() in s for s in seen)

    if p.source == "gym":
        return _gym_problems(p, unseen)
    key = "solve.problems.source"
    rows = load_table(p.source, p.split, (p.problem_column, p.answer_column), key)
    problems = []
    for i, row in enumerate(rows):
        problem, answer = row[p.problem_column], row[p.answer_column]
        if not isinstance(problem, str) or not problem.strip():
            raise StageError(f"{key} row {i}: no problem in '{p.problem_column}'")
        if answer is None or not str(answer).strip():
            raise StageError(f"{key} row {i}: no answer in '{p.answer_column}'")
        if unseen(problem):
            problems.append({"index": i, "problem": problem, "answer": str(answer), "entry": ""})
    random.Random(p.seed).shuffle(problems)
    n = len(problems) if p.n == "all" else p.n
    if n > len(problems):
        raise StageError(
            f"solve.problems.n {n}: {p.source!r} has {len(problems)} problems the steps data "
            f"set does not use ({len(rows) - len(problems)} it does)"
        )
    return sorted(problems[:n], key=lambda r: r["index"])


def _gym_problems(p: ProblemParams, unseen: Callable[[str], bool]) -> list[dict[str, Any]]:
    import reasoning_gym

    if p.n == "all":
        raise StageError("solve.problems.n: 'all' needs a finite data set; give a number")
    # reasoning-gym makes item i from the seed and i alone, on demand: a large size costs
    # nothing, and leaves room for repeats (a small task such as 1-digit products has 100)
    size = 50 * p.n + 100
    try:
        ds = reasoning_gym.create_dataset(p.task, size=size, seed=p.seed, **(p.config or {}))
    except Exception as e:  # reasoning-gym raises plain errors for unknown tasks and settings
        raise StageError(
            f"solve.problems.task {p.task!r} with config {p.config}: reasoning-gym cannot "
            f"build it ({e})"
        ) from e
    problems: list[dict[str, Any]] = []
    taken: set[str] = set()
    for i in range(size):
        entry = ds[i]
        question = str(entry["question"])
        if unseen(question) and question not in taken:
            taken.add(question)
            record = {"index": i, "problem": question, "answer": str(entry["answer"])}
            problems.append(record | {"entry": json.dumps(entry, default=str, sort_keys=True)})
            if len(problems) == p.n:
                return problems
    raise StageError(
        f"solve.problems.n {p.n}: {p.task} with config {p.config} gives only {len(problems)} "
        f"distinct problems the steps data set does not have in {size} draws"
    )


@dataclass(frozen=True)
class Condition:
    """One condition of a solve stage: the fields its records carry, its steering (None:
    none) and the request put after each problem (None: none)."""

    fields: dict[str, Any]
    steer: Steer | None = None
    ask: str | None = None


def solve(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    problems: list[dict[str, Any]],
    p: WritingParams,
    conditions: Sequence[Condition],
) -> list[dict[str, Any]]:
    """``p.n_samples`` solutions of each problem under each condition (with its ``ask`` after
    the problem, a paragraph of its own): one record each (the condition's ``fields``,
    ``problem``: its index, ``sample``, ``ids``, ``text``, ``n_tokens``, ``finished``: ended
    before the token limit, ``nll``: the unsteered model's mean NLL of the solution's tokens,
    to 4 places, a fluency measure of ``steering/quality.py``), condition by condition.

    Every condition's rows go to one ``generate`` call, keyed ``problem x n_samples + sample``
    (the same noise under every condition): batches then hold rows of several conditions,
    which share their prefill's instruction and the layers below a vector, and stay full
    longer as rows end (solve_steered's two coefficients: 87.0 s apart in batches of 90, 74.4 s
    together in batches of 180, the same tokens; docs/pipeline.md, the seventh step)."""
    context = getattr(model.config, "max_position_embeddings", None)
    rows: list[list[int]] = []
    steers: list[Steer | None] = []
    for condition in conditions:
        after = "" if condition.ask is None else "\n\n" + condition.ask
        prompts = [
            chat_prompt_ids(tokenizer, p.instruction + r["problem"] + after) for r in problems
        ]
        for r, ids in zip(problems, prompts, strict=True):
            if context is not None and len(ids) + p.max_new_tokens > context:
                raise StageError(
                    f"solve.generation.max_new_tokens {p.max_new_tokens}: problem "
                    f"{r['index']}'s prompt has {len(ids)} tokens, and the model's context is "
                    f"{context}"
                )
        rows += [ids for ids in prompts for _ in range(p.n_samples)]
        steers += [condition.steer] * (len(prompts) * p.n_samples)
    per_condition = len(problems) * p.n_samples
    plain: dict[int, list[float]] = {}  # unsteered rows' NLL comes with their tokens
    outs = generate(
        model,
        rows,
        steers=steers,
        max_new_tokens=p.max_new_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        seed=p.seed,
        batch_size=p.batch_size,
        pad_id=int(tokenizer.pad_token_id),
        logprobs=plain,
        row_keys=[k % per_condition for k in range(len(rows))],
    )
    # condition by condition: scoring families form by prompt, and four rows of one prompt
    # (two conditions) made more and narrower batches than two (57 s against 45 s)
    nll: list[float | None] = []
    for start in range(0, len(rows), per_condition):
        part = range(start, start + per_condition)
        nll += continuation_nll(
            model, [rows[k] for k in part], [outs[k] for k in part],
            pad_id=int(tokenizer.pad_token_id), batch_size=p.batch_size,
            known={k - start: plain[k] for k in part if k in plain},
        )  # fmt: skip
    special = set(tokenizer.all_special_ids)
    records = []
    for k, (out, value) in enumerate(zip(outs, nll, strict=True)):
        condition, row = conditions[k // per_condition], k % per_condition
        problem = problems[row // p.n_samples]["index"]
        text = str(tokenizer.decode(out, skip_special_tokens=True))
        finished = bool(out) and out[-1] in special
        records.append(
            {**condition.fields, "problem": problem, "sample": row % p.n_samples}
            | {"ids": list(out), "text": text, "n_tokens": len(out), "finished": finished}
            | {"nll": None if value is None else round(value, 4)}
        )
    return records


def checker(source: str, task: str) -> Callable[[str, dict[str, Any]], bool]:
    """``(answer, problem row) -> right?``: reasoning-gym's verifier for ``gym`` problems,
    math-verify's equivalence with the reference answer for any other source."""
    if source == "gym":
        gym = gym_checker(task)
        return lambda answer, row: gym(answer, row["entry"])
    return lambda answer, row: math_equal(reference_answer(row["answer"]), answer)


# where the labeller looks for a step's opening (``labels.find``): the start of the text, of a
# line, or of a sentence inside a line
_STARTS = re.compile(r"\n\s*|(?<=[.!?])[ \t]+")


def step_starts(text: str) -> list[int]:
    """Where the steps of a full solution start: a small model often writes a whole solution
    as one paragraph, so a step here is a line, or a sentence within a line."""
    return [0] + [m.end() for m in _STARTS.finditer(text) if m.end() < len(text)]


def score(
    record: dict[str, Any],
    row: dict[str, Any],
    tokenizer: Tokenizer,
    *,
    right: Callable[[str, dict[str, Any]], bool],
) -> dict[str, Any]:
    """A solution's measures: ``answer`` (None: unparsable), ``correct``,
    ``conclusion_tokens`` (the tokens before its first conclusion-like step; None: it has
    none), ``verification_steps`` (how many steps open a verification) and ``steps``, each step
    labelled by its opening with the rule labeller's patterns (``labels.classify_opening``)."""
    text = record["text"]
    answer = extract_answer(text)
    starts = step_starts(text)
    kinds = [classify_opening(text[k:]) for k in starts]
    first = next((k for k, c in zip(starts, kinds, strict=True) if c == CONCLUDING), None)
    return {
        "answer": answer,
        "correct": answer is not None and right(answer, row),
        "conclusion_tokens": None
        if first is None
        else tokens_before(tokenizer, record["ids"], text, first),
        "verification_steps": kinds.count(VERIFYING),
        "steps": len(starts),
    }
