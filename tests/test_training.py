"""training: the training text, training learns, the metrics are right."""

from __future__ import annotations

import random

import torch
from tiny import params

from steerpipe.gym import gym_problems
from steerpipe.lm.chat import chat_prompt_ids
from steerpipe.transcoders.fidelity import evaluate
from steerpipe.transcoders.training import (
    TranscoderParams,
    log_frequency,
    train_transcoder,
    training_texts,
)


def _sparse_task(n: int = 4096, d: int = 16, k: int = 32, seed: int = 0):
    """y is a sparse code of x: what a transcoder can learn exactly."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(d, k, generator=g)
    dec = torch.randn(k, d, generator=g)
    x = torch.randn(n, d, generator=g)
    y = torch.relu(x @ enc - 1.5) @ dec
    return x, y


def test_training_explains_the_variance() -> None:
    x, y = _sparse_task()
    tc = train_transcoder(
        x, y, layer=0, d_sae=64, l1=1e-4, lr=3e-3, steps=600, batch_size=256, progress=False
    )
    m = evaluate(tc, x, y)
    assert m["fraction_variance_explained"] > 0.9
    untrained = train_transcoder(
        x, y, layer=0, d_sae=64, l1=1e-4, lr=3e-3, steps=0, batch_size=256, progress=False
    )
    assert evaluate(untrained, x, y)["fraction_variance_explained"] < 0.5


def test_more_l1_gives_fewer_active_features() -> None:
    x, y = _sparse_task()
    kw = {"layer": 0, "d_sae": 64, "lr": 3e-3, "steps": 300, "batch_size": 256, "progress": False}
    loose = evaluate(train_transcoder(x, y, l1=1e-5, **kw), x, y)["l0"]
    tight = evaluate(train_transcoder(x, y, l1=3e-2, **kw), x, y)["l0"]
    assert tight < loose


def test_log_frequency_and_dead_features() -> None:
    x, y = _sparse_task(n=64)
    tc = train_transcoder(
        x, y, layer=0, d_sae=8, l1=1e-3, lr=1e-3, steps=0, batch_size=64, progress=False
    )
    tc.b_enc[0] = -1e6  # never fires
    tc.b_enc[1] = 1e6  # always fires
    freq = log_frequency(tc, x)
    assert freq[0] == -10 and freq[1] == 0
    assert evaluate(tc, x, y)["dead_fraction"] >= 1 / 8


def test_training_texts_are_each_question_in_each_form(tokenizer) -> None:
    p = params(
        TranscoderParams,
        tasks=["syllogism"],
        texts_per_task=4,
        text_forms=["chat", "raw"],
        heldout_fraction=0.25,
        max_tokens=12,
        seed=3,
    )
    train, held = training_texts(tokenizer, p)
    questions = gym_problems("syllogism", 4, p.problem_seed)
    random.Random(3).shuffle(questions)
    assert held == [
        chat_prompt_ids(tokenizer, questions[0])[:12],
        tokenizer(questions[0]).input_ids[:12],
    ]
    assert len(train) == 6 and all(len(s) == 12 for s in train)
    assert train[1] == tokenizer(questions[1]).input_ids[:12]
