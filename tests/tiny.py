"""Tiny things the tests build: a Llama config and rows in the paper's data-set schema."""

from __future__ import annotations

from transformers import LlamaConfig

from steerpipe.standins import steps_rows


def tiny_config(vocab_size: int, n_layers: int = 4) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def synthetic_rows(n: int = 12) -> list[dict]:
    """Rows in the schema of immindich/reasoning-steps-labeled, each with both kinds."""
    return steps_rows(n)
