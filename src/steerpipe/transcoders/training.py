"""Training a small transcoder where no pretrained one exists (the packaged SmolLM2).

``TranscoderParams`` is params.yaml ``transcoder``. The transcoder learns the MLP of one block,
MLP input to MLP output, on the model's own activations (``fidelity.collect_mlp_io``) over
reasoning-gym questions (``training_texts``), with an L1 penalty on the features (weighted by
the decoder norms, so the penalty cannot be dodged by shrinking the encoder). What it is worth
on held-out tokens is measured by ``fidelity``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase as Tokenizer

from steerpipe.config import check
from steerpipe.gym import gym_problems
from steerpipe.lm.chat import chat_prompt_ids
from steerpipe.transcoders.transcoder import Transcoder


@dataclass(frozen=True)
class TranscoderParams:
    SECTION: ClassVar[str] = "transcoder"
    layers: Literal["all"] | list[int]
    tasks: list[str]  # reasoning-gym tasks whose questions are the training text
    texts_per_task: int
    problem_seed: int  # which questions each task gives
    max_tokens: int  # per text
    text_forms: list[Literal["chat", "raw"]]
    heldout_fraction: float
    d_sae: int
    l1: float
    lr: float
    steps: int
    batch_size: int
    token_budget: int
    seed: int  # the text order and the training

    def __post_init__(self) -> None:
        key = "transcoder"
        check(bool(self.tasks), f"{key}.tasks", "a non-empty list of reasoning-gym tasks")
        check(self.texts_per_task >= 1, f"{key}.texts_per_task", "at least 1")
        check(self.max_tokens >= 2, f"{key}.max_tokens", "at least 2")
        check(bool(self.text_forms), f"{key}.text_forms", "a non-empty list of chat and raw")
        check(0 < self.heldout_fraction < 1, f"{key}.heldout_fraction", "in (0, 1)")
        for name in ("d_sae", "steps", "batch_size", "token_budget"):
            check(getattr(self, name) >= 1, f"{key}.{name}", "at least 1")
        check(self.l1 >= 0 and self.lr > 0, f"{key}.l1/lr", "l1 >= 0 and lr > 0")


def training_texts(
    tokenizer: Tokenizer, p: TranscoderParams
) -> tuple[list[list[int]], list[list[int]]]:
    """(training, held-out) token sequences: the questions of ``p.tasks``, shuffled by
    ``p.seed``, each in every one of ``p.text_forms`` (under the chat template, or as raw text
    like the trace prompts) and cut at ``p.max_tokens``; the first ``heldout_fraction`` of the
    questions (at least one) are held out."""
    texts = [
        q
        for task in p.tasks
        for q in gym_problems(task, p.texts_per_task, p.problem_seed, key="transcoder.tasks")
    ]
    random.Random(p.seed).shuffle(texts)

    def encode(text: str) -> list[list[int]]:
        return [
            (
                chat_prompt_ids(tokenizer, text)
                if form == "chat"
                else list(tokenizer(text).input_ids)
            )
            for form in p.text_forms
        ]

    n_held = max(1, int(len(texts) * p.heldout_fraction))
    cut = p.max_tokens
    train = [s[:cut] for t in texts[n_held:] for s in encode(t)]
    held = [s[:cut] for t in texts[:n_held] for s in encode(t)]
    return train, held


def train_transcoder(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    layer: int,
    d_sae: int,
    l1: float,
    lr: float,
    steps: int,
    batch_size: int,
    seed: int = 0,
    progress: bool = True,
) -> Transcoder:
    g = torch.Generator().manual_seed(seed)
    d_in, d_out = x.shape[1], y.shape[1]
    w_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=g) / math.sqrt(d_in))
    w_dec = nn.Parameter(torch.randn(d_sae, d_out, generator=g) / math.sqrt(d_sae))
    b_enc = nn.Parameter(torch.zeros(d_sae))
    b_dec = nn.Parameter(x.mean(0).clone())
    b_dec_out = nn.Parameter(y.mean(0).clone())
    params = [w_enc, w_dec, b_enc, b_dec, b_dec_out]
    opt = torch.optim.Adam(params, lr=lr)
    scale = y.var(0).sum()  # so that l1 means the same at any layer's output scale
    with torch.enable_grad():
        for _ in tqdm(range(steps), desc=f"train transcoder {layer}", disable=not progress):
            idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
            xb, yb = x[idx], y[idx]
            f = torch.relu((xb - b_dec) @ w_enc + b_enc)
            mse = ((f @ w_dec + b_dec_out - yb) ** 2).sum(-1).mean() / scale
            sparsity = (f * w_dec.norm(dim=1)).sum(-1).mean()
            loss = mse + l1 * sparsity
            opt.zero_grad()
            loss.backward()
            opt.step()
    return Transcoder(
        W_enc=w_enc.detach().clone(),
        b_enc=b_enc.detach().clone(),
        W_dec=w_dec.detach().clone(),
        b_dec=b_dec.detach().clone(),
        b_dec_out=b_dec_out.detach().clone(),
        layer=layer,
    )


def log_frequency(transcoder: Transcoder, x: torch.Tensor, floor: float = -10.0) -> torch.Tensor:
    """log10 of how often each feature fires on ``x``; ``floor`` (dead) where it never does."""
    fired = (transcoder.encode(x) > 0).float().mean(0)
    return torch.where(fired > 0, fired.clamp_min(1e-30).log10(), torch.tensor(floor))
