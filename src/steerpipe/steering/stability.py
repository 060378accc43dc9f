"""Label stability: would the model write a labelled step again from the same prefix?

A labelled step is one draw of the sampler. ``regenerate`` samples ``n_samples`` new openings
of each step from the prompt that ends right before it (the model's own trace up to the step,
as ``prepare``'s ``trace`` reconstruction rebuilds it) with the traces' sampler; the rule
labeller labels each opening as it labels a step (``labels.classify_opening``), and a step's
stability is the share of its regenerations that get its kind. A 2026 study of reflection
steps (arXiv 2604.02113) found that 93.3% of the boundaries found by keywords did not reappear
when the trace was regenerated from the same prefix.

Each draw's noise is keyed by what it regenerates (data-set row, step, sample; ``draw_key``),
not by its place in the batch, so adding problems, steps or kinds leaves every earlier draw
as it was. The stability stage runs it; ``prepare.stable_steps`` is the filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from steerpipe.claude.message_batches import ClaudeParams
from steerpipe.claude.step_labels import claude_labels
from steerpipe.config import check
from steerpipe.lm.generation import generate
from steerpipe.lm.models import Tokenizer
from steerpipe.steering.labels import KIND_OF, classify_opening
from steerpipe.steering.prepare import KINDS, Kind, step_tokens, steps_of_kind

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel

_STEP_BITS, _SAMPLE_BITS = 16, 12


@dataclass(frozen=True)
class StabilityParams:
    SECTION: ClassVar[str] = "stability"
    kinds: list[Kind]  # the kinds whose steps are regenerated
    n_samples: int  # regenerations of each step (K)
    max_new_tokens: int  # of each regenerated opening
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        check(bool(self.kinds), "stability.kinds", f"a non-empty list of {KINDS}")
        check(all(k in KINDS for k in self.kinds), "stability.kinds", f"kinds of {KINDS}")
        check(1 <= self.n_samples < 1 << _SAMPLE_BITS, "stability.n_samples", "1 to 4095")
        check(self.max_new_tokens >= 1, "stability.max_new_tokens", "at least 1")
        check(self.batch_size >= 1, "stability.batch_size", "at least 1")


def draw_key(row: int, step: int, sample: int) -> int:
    """The noise key of one regeneration, fixed by what it regenerates."""
    if not (0 <= step < 1 << _STEP_BITS and 0 <= sample < 1 << _SAMPLE_BITS and row >= 0):
        raise ValueError(f"no key for row {row}, step {step}, sample {sample}")
    return (row << (_STEP_BITS + _SAMPLE_BITS)) | (step << _SAMPLE_BITS) | sample


def label_of(text: str) -> str:
    """The kind the rule labeller gives a step that opens with ``text``."""
    return KIND_OF.get(classify_opening(text), "other")


def stability_items(
    rows: list[dict[str, Any]], tokenizer: Tokenizer, kinds: Sequence[str], *, separator: str
) -> list[dict[str, Any]]:
    """Every step of ``kinds`` in the data set: its row, index, kind and the prompt that ends
    right before it (``prepare.step_tokens`` with the ``trace`` reconstruction)."""
    items = []
    for r, row in enumerate(rows):
        for kind in kinds:
            for k in steps_of_kind(row, kind):
                prompt, _ = step_tokens(
                    tokenizer, row, k, separator=separator, reconstruction="trace"
                )
                items.append({"row": r, "step": k, "kind": kind, "prompt_ids": prompt})
    return items


def regenerate(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    items: list[dict[str, Any]],
    *,
    n_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    batch_size: int,
    pad_id: int,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Per item, ``n_samples`` regenerated openings, their labels and the step's stability:
    the share of them labelled its kind. The samples of one item share its prefill."""
    prompts = [it["prompt_ids"] for it in items for _ in range(n_samples)]
    keys = [draw_key(it["row"], it["step"], j) for it in items for j in range(n_samples)]
    outs = generate(
        model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
        seed=seed, batch_size=batch_size, pad_id=pad_id, row_keys=keys, progress=progress,
    )  # fmt: skip
    records = []
    for i, it in enumerate(items):
        texts = [
            str(tokenizer.decode(out, skip_special_tokens=True))
            for out in outs[i * n_samples : (i + 1) * n_samples]
        ]
        labels = [label_of(t) for t in texts]
        records.append(
            {
                "row": it["row"],
                "step": it["step"],
                "kind": it["kind"],
                "openings": texts,
                "labels": labels,
                "stability": share_of(it["kind"], labels),
            }
        )
    return records


def share_of(kind: str, labels: list[str]) -> float:
    """A step's stability: the share of its labelled regenerations that get its kind (an
    opening Claude left unlabelled counts against it)."""
    return sum(label == kind for label in labels) / len(labels)


def relabel_with_claude(
    records: list[dict[str, Any]], rows: list[dict[str, Any]], settings: ClaudeParams
) -> dict[str, Any]:
    """Label every regenerated opening with Claude, as ``steps.labeller: anthropic`` labelled
    the steps: the problem and the trace's steps before the step, then the opening as the
    last step, whose label is read from Claude's answer. Replaces the records' labels and
    stability in place; returns the batch runner's counts (an unanswered or unparsed opening
    is labelled ``unlabelled``)."""
    pseudo = [
        {
            "problem": rows[rec["row"]]["problem"],
            "steps": [*rows[rec["row"]]["steps"][: rec["step"]], text],
        }
        for rec in records
        for text in rec["openings"]
    ]
    labels, stats = claude_labels(pseudo, settings)
    answers = iter(labels)
    for rec in records:
        kinds = []
        for _ in rec["openings"]:
            got, k = next(answers), rec["step"]
            if got is None:
                kinds.append("unlabelled")
                continue
            # Claude may list a step as both; the opening gets the record's kind if it is one
            pairs = zip(("verification", "conclusion"), got, strict=True)
            found = [kind for kind, steps in pairs if k in steps]
            kinds.append(rec["kind"] if rec["kind"] in found else (found or ["other"])[0])
        rec["labels"], rec["stability"] = kinds, share_of(rec["kind"], kinds)
    return stats


def stability_summary(records: list[dict[str, Any]], n_samples: int) -> dict[str, dict[str, Any]]:
    """Per kind: how many steps, their mean stability, and how many at each level 0..K/K."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(rec["kind"] for rec in records):
        values = [rec["stability"] for rec in records if rec["kind"] == kind]
        levels = {f"{j}/{n_samples}": 0 for j in range(n_samples + 1)}
        for v in values:
            levels[f"{round(v * n_samples)}/{n_samples}"] += 1
        out[kind] = {
            "steps": len(values),
            "mean_stability": sum(values) / len(values),
            "at_least_half": sum(v >= 0.5 for v in values),
            "levels": levels,
        }
    return out
