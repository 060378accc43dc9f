"""Tiny things the tests build: a Llama config, rows in the paper's data-set schema, and
parameters from the repository's params.yaml with changes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import LlamaConfig, PretrainedConfig, PreTrainedModel

from steerpipe.config import load
from steerpipe.lm.models import randomize_norms
from steerpipe_presets.standins import steps_rows

ROOT = Path(__file__).resolve().parents[1]
P = TypeVar("P")


def params(cls: type[P], **changes: Any) -> P:
    """The repository's params.yaml section ``cls`` with ``changes``, checked as a stage would."""
    return dataclasses.replace(load(cls, ROOT / "params.yaml"), **changes)  # type: ignore[type-var]


# every tiny model's widths
SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def tiny_config(vocab_size: int, n_layers: int = 4) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        num_hidden_layers=n_layers,
        **SIZES,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def tiny_family(
    cls: type[PreTrainedModel],
    config_cls: type[PretrainedConfig],
    vocab_size: int,
    n_layers: int = 3,
    **extra: Any,
) -> PreTrainedModel:
    """A tiny seeded model of another family (Qwen2, Gemma, ...), random norm gains included."""
    config = config_cls(
        vocab_size=vocab_size,
        num_hidden_layers=n_layers,
        **SIZES,
        head_dim=16,
        max_position_embeddings=256,
        **extra,
    )
    torch.manual_seed(0)
    model = cls(config).eval()
    randomize_norms(model)
    return model


def synthetic_rows(n: int = 12) -> list[dict]:
    """Rows in the schema of immindich/reasoning-steps-labeled, each with both kinds."""
    return steps_rows(n)
