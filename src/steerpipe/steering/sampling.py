"""Sampling experiment A's continuations: the ``sampling`` section and conditions sharing batches.

The sweep and steer stages sample a few tokens after each held-out prompt under several
conditions (the sweep's cells; steer's control, steered, controls and doses). Each condition is
a steering vector, a prompting baseline (``Prompting``: tokens after each prompt) or none; all
of them go through one ``generate`` call, so they share batches, and a sample's noise is keyed
by its condition's place, its prompt and its sample (``lm/noise.py``), so that a condition
samples the same tokens alone or beside the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import check
from steerpipe.lm.generation import generate
from steerpipe.lm.hooks import Steer
from steerpipe.lm.scoring import continuation_nll

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class Prompting:
    """A prompting baseline: tokens after each prompt, with no vector. ``ask`` is part of the
    prompt (the instruction baseline's user turn, ``chat.ask_ids``); ``prefill`` begins the
    sample and is part of its text, its NLL and its judging (the prefill baseline's opener):
    ``max_new_tokens`` follow it."""

    ask: tuple[int, ...] = ()
    prefill: tuple[int, ...] = ()


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
    conditions: Sequence[tuple[dict[str, Any], Steer | Prompting | None]],
    prompts: list[dict[str, Any]],
    *,
    n_samples: int,
    sampling: SamplingParams,
    seed: int,
    first_condition: int = 0,
) -> list[dict[str, Any]]:
    """Samples under each condition on each prompt, all sharing batches.

    ``conditions`` pairs the fields every record of a condition carries with its steer (the
    sweep's are its cells, the steer stage's control and steered) or its ``Prompting`` (the
    steer stage's baselines); ``prompts`` are prepared examples (``row``, ``step``,
    ``prompt_ids``). One record per condition, prompt and sample, in that order, with the
    sampled ``text`` decoded without special tokens (a prefill first), ``new_tokens`` (those
    sampled) and ``nll``: the unsteered model's mean NLL of the text's tokens
    (``lm/scoring.py``, to 4 places), a fluency measure (``steering/quality.py``).
    A sample's noise is keyed by (its condition's place in the list, prompt, sample), so a
    condition run alone as ``conditions[k:k+1]`` with ``first_condition=k`` samples exactly
    what it samples beside the others; moving a condition in the list redraws it.
    """
    records, inputs, steers, prefills = [], [], [], []
    for fields, how in conditions:
        prompting = how if isinstance(how, Prompting) else Prompting()
        for ex in prompts:
            for sample in range(n_samples):
                records.append({**fields, "row": ex["row"], "step": ex["step"], "sample": sample})
                inputs.append([*ex["prompt_ids"], *prompting.ask, *prompting.prefill])
                steers.append(how if isinstance(how, Steer) else None)
                prefills.append(list(prompting.prefill))
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
    # a prefilled sample is its opener and what followed, scored after the prompt before it
    texts = [pre + out for pre, out in zip(prefills, outs, strict=True)]
    nll = continuation_nll(
        model,
        [ids[: len(ids) - len(pre)] for ids, pre in zip(inputs, prefills, strict=True)],
        texts,
        pad_id=int(tokenizer.pad_token_id),
        batch_size=sampling.batch_size,
        known={i: v for i, v in plain.items() if not prefills[i]},
    )
    for record, out, text, value in zip(records, outs, texts, nll, strict=True):
        record["text"] = str(tokenizer.decode(text, skip_special_tokens=True))
        record["new_tokens"] = len(out)
        record["nll"] = None if value is None else round(value, 4)
    return records
