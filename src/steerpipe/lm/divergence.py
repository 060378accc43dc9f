"""How far a steering vector moves the model's next-token distribution on text it was not made
for: the KL divergence of the steered distribution from the plain one, teacher-forced.

    KL(steered || plain) = sum over the vocabulary of p_steered * (log p_steered - log p_plain)

at every position of every text, averaged over all positions (nats per token). The vector is
added at ``blocks.{L}.hook_resid_pre`` on every position, as the sampling stages add it. A
coefficient whose KL on neutral text is large changes more than the behaviour it targets:
Activation-Steered Compression (arXiv 2507.04742) bounds the coefficient this way.

Rows are (condition, text) pairs, a batch one text's rows, so that they compute the layers
below their vectors once (``shared_layers.py``) and nothing is padded; the plain model's
log-probabilities of each text are computed once, alone, so that a row that adds nothing
computes exactly what they are (its KL is 0). ``hooked_kl`` takes any per-row hook: the
neuron interventions of experiment B (``transcoders/neuron_eval.py``) as well as vectors.
``tests/test_divergence.py`` checks the result against each row run alone, by hand.

The neutral text (the ``kl`` section): by default prose from a packaged corpus, Jules and
Michel Verne's *In the Year 2889* (Project Gutenberg #19362), which reasoning-gym ships as
``reasoning_gym/data/in_the_year_2889.txt`` for its text tasks. It is neither a math problem
nor a reasoning trace nor a Yes/No question, so a vector or a neuron intervention that only
changes reasoning should leave it nearly as it was. ``kl.n_texts`` passages of ``kl.tokens``
tokens each are cut at even spacing from the book's body (between Gutenberg's START and END
lines, its lines re-flowed into paragraphs); a local ``.txt`` file is read the same way.
"""

from __future__ import annotations

import importlib.util
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import StageError, check
from steerpipe.lm.batch_sizes import fit_rows, in_batches
from steerpipe.lm.chat import encode
from steerpipe.lm.hooks import Steer
from steerpipe.lm.shared_layers import RowHooks, forward_shared, steering

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel

PACKAGED = "packaged:in_the_year_2889"


@dataclass(frozen=True)
class KLParams:
    """params.yaml ``kl``: the neutral text on which a vector's KL is measured."""

    SECTION: ClassVar[str] = "kl"
    text: str  # packaged:in_the_year_2889 | path/to.txt
    n_texts: int  # passages
    tokens: int  # per passage
    batch_size: int  # rows (passage x condition) a forward

    def __post_init__(self) -> None:
        check(self.n_texts >= 1, "kl.n_texts", "at least 1")
        check(self.tokens >= 2, "kl.tokens", "at least 2")
        check(self.batch_size >= 1, "kl.batch_size", "at least 1")


def corpus(source: str) -> str:
    """The text of ``source``: the packaged book or a local UTF-8 ``.txt`` file."""
    if source == PACKAGED:
        # the file itself: importing reasoning_gym (1 s) would load its every task
        spec = importlib.util.find_spec("reasoning_gym")
        if spec is None or not spec.submodule_search_locations:
            raise StageError(f"kl.text: {PACKAGED} needs reasoning-gym, which is not installed")
        book = Path(spec.submodule_search_locations[0]) / "data" / "in_the_year_2889.txt"
        return book.read_text(encoding="utf-8")
    path = Path(source)
    if path.suffix != ".txt" or not path.is_file():
        raise StageError(f"kl.text: {source} is neither {PACKAGED} nor a .txt file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise StageError(f"kl.text: {source} is not UTF-8 text ({e.reason})") from None


def body(text: str) -> str:
    """A book's body: between Gutenberg's START and END lines where it has them, each
    paragraph's lines joined by spaces, paragraphs by one blank line."""
    start = re.search(r"^\*\*\* START OF .*$", text, re.M)
    end = re.search(r"^\*\*\* END OF .*$", text, re.M)
    text = text[start.end() if start else 0 : end.start() if end else len(text)]
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paragraphs if p)


def neutral_texts(tokenizer: Tokenizer, p: KLParams) -> list[list[int]]:
    """``p.n_texts`` passages of ``p.tokens`` token ids each, evenly spaced through the body."""
    ids = encode(tokenizer, body(corpus(p.text)))
    need = p.n_texts * p.tokens
    if len(ids) < need:
        raise StageError(
            f"kl.text: {p.text} has {len(ids)} tokens, fewer than kl.n_texts x kl.tokens = {need}"
        )
    step = (len(ids) - p.tokens) // max(p.n_texts - 1, 1)
    return [ids[k * step : k * step + p.tokens] for k in range(p.n_texts)]


def next_token_kl(
    model: PreTrainedModel,
    texts: Sequence[Sequence[int]],
    steers: Sequence[Steer | None],
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> list[float]:
    """For each of ``steers`` (None: the plain model), the mean over every position of every
    text of KL(steered || plain) of the next-token distribution, in nats."""
    starts, hooks = steering(model, steers)
    return hooked_kl(model, texts, starts, hooks, batch_size=batch_size, progress=progress)


def hooked_kl(
    model: PreTrainedModel,
    texts: Sequence[Sequence[int]],
    starts: Sequence[int | None],
    hooks: RowHooks,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> list[float]:
    """``next_token_kl`` for any per-row hook: condition ``k`` is ``hooks`` acting on a row
    given as ``k`` (``hooks([k, ...])`` acts on a batch's rows in order; ``steering``'s, or a
    transcoder's feature hook), from layer ``starts[k]`` up (None: not at all)."""
    if not texts or any(len(t) == 0 for t in texts):
        raise ValueError("next_token_kl needs texts, none of them empty")

    def log_probs(ks: list[int], j: int) -> torch.Tensor:
        """float32 log-softmax of the logits at each position of ``texts[j]`` under each
        condition of ``ks``: ``[len(ks), tokens, vocabulary]`` (float64 took 4 times as long
        on the 2-core CPU and moved a KL by under 1e-6 of itself)."""
        ids = torch.tensor([list(texts[j])] * len(ks))
        mask = torch.ones_like(ids)
        row_starts = [starts[k] for k in ks]
        logits = forward_shared(
            model, ids, mask, row_starts, lambda rows: hooks([ks[r] for r in rows])
        )
        return torch.log_softmax(logits.float(), dim=-1)

    # each text alone, as each batch of hooked rows below holds one text: no padding anywhere
    plain = []
    for text in texts:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([list(text)], device=model.device)).logits
        plain.append(torch.log_softmax(logits[0].float(), dim=-1))
    rows = [(k, j) for j in range(len(texts)) for k in range(len(starts))]
    totals = [0.0] * len(starts)
    limit = fit_rows(model, max(map(len, texts)), batch_size)
    bar = tqdm(total=len(rows), desc="kl", unit="row", disable=not progress)

    def take(queue: deque[int], n: int) -> list[int]:
        """Up to ``n`` rows of the next row's text."""
        batch = [queue.popleft()]
        while queue and len(batch) < n and rows[queue[0]][1] == rows[batch[0]][1]:
            batch.append(queue.popleft())
        return batch

    def work(batch: list[int]) -> None:
        ks, j = [rows[i][0] for i in batch], rows[batch[0]][1]
        for k, logp in zip(ks, log_probs(ks, j), strict=True):
            totals[k] += float((logp.exp() * (logp - plain[j])).sum(dtype=torch.float64))
        bar.update(len(batch))

    in_batches(
        deque(range(len(rows))),
        limit,
        take,
        work,
        rows=len,
        halve=lambda b: len(b) // 2,
        device=model.device,
    )
    bar.close()
    positions = sum(map(len, texts))
    return [total / positions for total in totals]
