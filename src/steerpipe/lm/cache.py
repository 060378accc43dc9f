"""A KV cache that grows in place: HF's ``DynamicCache`` without a copy of the cache per token.

``DynamicCache`` appends each decoded token with ``torch.cat``, which copies the layer's whole
cache every step: a quarter of a decoding step of the packaged model on the CPU (90 rows,
243 tokens). ``GrowingCache`` writes into a buffer of ``capacity`` positions (doubled when
outgrown) and hands attention a view of the filled part, so the keys and values it sees are
the same numbers in the same order, and the tokens generated are the same.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """One layer's keys and values, a view of the first positions of a larger buffer."""

    def __init__(self, capacity: int = 0) -> None:
        super().__init__()
        self.capacity = capacity
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._keys = self._values = None
        keys, values = self.keys, self.values
        assert keys is not None and values is not None
        old = keys.shape[-2] if keys.numel() else 0
        n = old + key_states.shape[-2]
        buf = self._keys
        # the parent's batch_select_indices, batch_repeat_interleave, ... replace self.keys with
        # a new tensor: the buffer is then rebuilt from it
        if (
            buf is None
            or self._values is None
            or (old > 0 and keys.data_ptr() != buf.data_ptr())
            or buf.shape[0] != key_states.shape[0]
            or n > buf.shape[-2]
        ):
            size = max(n, self.capacity, 2 * old)
            buf = key_states.new_empty((*key_states.shape[:-2], size, key_states.shape[-1]))
            self._values = value_states.new_empty(buf.shape[:-1] + value_states.shape[-1:])
            if old:
                buf[..., :old, :] = keys
                self._values[..., :old, :] = values
            self._keys = buf
        buf[..., old:n, :] = key_states
        self._values[..., old:n, :] = value_states
        self.keys, self.values = buf[..., :n, :], self._values[..., :n, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # the buffer's rows, so that the next token is written in place (the parent's would
        # leave a tensor of exactly the filled length, to be copied into a new buffer)
        keys, buf, values = self.keys, self._keys, self._values
        # an empty cache, or one that another of the parent's methods replaced (no view of the
        # buffer), is the parent's to select from
        if (
            keys is None
            or buf is None
            or values is None
            or not keys.numel()
            or keys.data_ptr() != buf.data_ptr()
        ):
            return super().batch_select_indices(indices)
        n = keys.shape[-2]
        self._keys, self._values = buf[indices], values[indices]
        self.keys, self.values = self._keys[..., :n, :], self._values[..., :n, :]


class GrowingCache(DynamicCache):
    """``DynamicCache(config=...)`` whose full-attention layers are ``GrowingLayer``s of
    ``capacity`` positions (the longest prompt plus the new tokens); sliding-window layers
    stay HF's."""

    def __init__(self, config: PretrainedConfig, capacity: int = 0) -> None:
        super().__init__(config=config)
        self.layers = [
            GrowingLayer(capacity) if type(layer) is DynamicLayer else layer
            for layer in self.layers
        ]
