"""Tiny things the tests build: a Llama config and rows in the paper's data-set schema."""

from __future__ import annotations

from transformers import LlamaConfig


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
    rows = []
    for i in range(n):
        steps = [
            f"We need to add {i} and {i + 3} to find the total number of apples in the basket.",
            f"Adding them gives {i} + {i + 3} = {2 * i + 3}, which is the number of apples.",
            f"Wait, let me double-check that sum once more: {i} plus {i + 3} is {2 * i + 3}.",
            f"Therefore, the answer is {2 * i + 3} apples in the basket at the end of the day.",
        ]
        rows.append(
            {
                "problem": f"A basket has {i} apples and gets {i + 3} more. How many now?",
                "steps": steps,
                "verification_steps": [2],
                "conclusion_steps": [3],
            }
        )
    return rows
