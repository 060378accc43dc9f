"""Batch sizes that adapt to the memory free on the model's device.

On a GPU a batch is the smaller of its cap (a param) and what the free memory holds at an
estimated cost per token; on the CPU the cap is used as is (host memory is not what these
batch sizes guard, and the CPU's batches stay the same from run to run). The estimates are
deliberately rough: a batch that still runs out of memory is retried at half its size
(``in_batches``, the loop of ``generation.generate`` and ``activations.capture_resid_pre``),
and later batches keep the smaller size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import torch
from transformers import PretrainedConfig

if TYPE_CHECKING:  # only annotations name it; importing it costs ~2 s (docs/pipeline.md)
    from transformers import PreTrainedModel

T = TypeVar("T")

# the share of the free memory a batch may plan to use: allocator fragmentation and the
# kernels' workspaces take the rest
USE_PERCENT = 80


def free_bytes(device: torch.device) -> int | None:
    """Bytes a new batch can use on ``device``: free memory plus what torch's caching
    allocator holds unused; None on the CPU (no limit is applied there)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + cached)


def _text_config(model: PreTrainedModel) -> PretrainedConfig:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def activation_bytes_per_token(model: PreTrainedModel) -> int:
    """Working memory of one token in one layer's forward: a few residual-width tensors
    (norm, attention in and out) and the MLP's gate, up and activation."""
    c = _text_config(model)
    elem = model.dtype.itemsize
    return elem * (6 * int(c.hidden_size) + 3 * int(c.intermediate_size))


def kv_bytes_per_token(model: PreTrainedModel) -> int:
    """The KV cache of one token across all layers."""
    c = _text_config(model)
    heads = int(getattr(c, "num_key_value_heads", None) or c.num_attention_heads)
    head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    return 2 * int(c.num_hidden_layers) * heads * head_dim * model.dtype.itemsize


def fit_rows(model: PreTrainedModel, tokens_per_row: int, cap: int) -> int:
    """Rows of ``tokens_per_row`` (prompt + new tokens) that one generation batch can hold:
    each row's KV cache, its prefill activations, and its float32 logits with the copies
    that sampling makes (softmax, sort, indices)."""
    free = free_bytes(model.device)
    if free is None:
        return cap
    vocab = int(_text_config(model).vocab_size)
    per_row = (
        tokens_per_row * (kv_bytes_per_token(model) + activation_bytes_per_token(model))
        + vocab * 24
    )
    return max(1, min(cap, free * USE_PERCENT // 100 // per_row))


def fit_tokens(model: PreTrainedModel, cap: int, longest: int) -> int:
    """Padded tokens that one forward batch can hold, for sequences of up to ``longest``
    tokens (each token's attention-mask row is ``longest`` wide)."""
    free = free_bytes(model.device)
    if free is None:
        return cap
    per_token = activation_bytes_per_token(model) + 4 * longest
    return max(longest, min(cap, free * USE_PERCENT // 100 // per_token))


def in_batches(
    queue: deque[T],
    limit: int,
    take: Callable[[deque[T], int], list[T]],
    work: Callable[[list[T]], None],
    *,
    rows: Callable[[list[T]], int],
    halve: Callable[[list[T]], int],
    device: torch.device,
) -> None:
    """``work`` on each batch ``take(queue, limit)`` until the queue is empty.

    A batch that runs out of memory goes back to the front of the queue, and ``limit``
    becomes ``halve(batch)`` for it and every later batch; a batch of one row (``rows``)
    that does not fit re-raises.
    """
    while queue:
        batch = take(queue, limit)
        try:
            work(batch)
        except torch.OutOfMemoryError:
            if rows(batch) == 1:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            limit = halve(batch)
            queue.extendleft(reversed(batch))
