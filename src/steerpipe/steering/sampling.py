"""Sampling experiment A's continuations: the ``sampling`` section and conditions sharing batches.

The sweep and steer stages sample a few tokens after each held-out prompt under several
conditions (the sweep's cells; steer's control, steered, controls and doses). Each condition is
a steering vector or none; all of them go through one ``generate`` call, so they share batches,
and a sample's noise is keyed by its condition's place, its prompt and its sample
(``lm/noise.py``), so that a condition samples the same tokens alone or beside the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import PreTrainedModel
from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import check
from steerpipe.lm.generation import generate
from steerpipe.lm.hooks import Steer
from steerpipe.lm.scoring import continuation_nll


@dataclass(frozen=True)
class SamplingParams:
    """params.yaml ``sampling``: how the sweep and steer stages sample their continuations."""

    SECTION: ClassVar[str] = "sampling"
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int

    def __post_init__(self) -> None:
        check_sampling(self, self.SECTION)


def check_sampling(p: Any, section: str) -> None:
    """The rules for sampling settings, in every section that has them (``sampling``,
    ``steps``, ``solve.generation``)."""
    check(p.max_new_tokens >= 1, f"{section}.max_new_tokens", "at least 1")
    check(p.temperature >= 0, f"{section}.temperature", "at least 0 (0: greedy)")
    check(0 < p.top_p <= 1, f"{section}.top_p", "in (0, 1]")
    check(p.batch_size >= 1, f"{section}.batch_size", "at least 1")


def sample_conditions(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    conditions: Sequence[tuple[dict[str, Any], Steer | None]],
    prompts: list[dict[str, Any]],
    *,
    n_samples: int,
    sampling: SamplingParams,
    seed: int,
    first_condition: int = 0,
) -> list[dict[str, Any]]:
    """Samples under each condition on each prompt, all sharing batches.

    ``conditions`` pairs the fields every record of a condition carries with its steer (the
    sweep's are its cells, the steer stage's control and steered); ``prompts`` are prepared
    examples (``row``, ``step``, ``prompt_ids``). One record per condition, prompt and
    sample, in that order, with the sampled ``text`` decoded without special tokens, its
    ``new_tokens`` and ``nll``: the unsteered model's mean NLL of them (``lm/scoring.py``,
    to 4 places), a fluency measure (``steering/quality.py``).
    A sample's noise is keyed by (its condition's place in the list, prompt, sample), so a
    condition run alone as ``conditions[k:k+1]`` with ``first_condition=k`` samples exactly
    what it samples beside the others; moving a condition in the list redraws it.
    """
    records, inputs, steers = [], [], []
    for fields, steer in conditions:
        for ex in prompts:
            for sample in range(n_samples):
                records.append({**fields, "row": ex["row"], "step": ex["step"], "sample": sample})
                inputs.append(ex["prompt_ids"])
                steers.append(steer)
    plain: dict[int, list[float]] = {}  # the control rows' NLL comes with their tokens
    outs = generate(
        model,
        inputs,
        steers=steers,
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        seed=seed,
        batch_size=sampling.batch_size,
        pad_id=int(tokenizer.pad_token_id),
        first_row=first_condition * len(prompts) * n_samples,
        logprobs=plain,
    )
    nll = continuation_nll(
        model,
        inputs,
        outs,
        pad_id=int(tokenizer.pad_token_id),
        batch_size=sampling.batch_size,
        known=plain,
    )
    for record, out, value in zip(records, outs, nll, strict=True):
        record["text"] = str(tokenizer.decode(out, skip_special_tokens=True))
        record["new_tokens"] = len(out)
        record["nll"] = None if value is None else round(value, 4)
    return records
