"""The decode loops' KV cache: transformers' cache API over buffers preallocated for the whole sequence.

transformers' `DynamicCache` concatenates each new token onto every layer's keys and values, re-allocating and
copying the whole cache at every step: under `benchmarks.profile` the cache's `aten::cat` dominated a 50M-parameter
model's image generation on CPU. `preallocated_cache` writes into buffers sized for the whole sequence and hands
attention views of the filled part: the same values, no copies.
"""

from __future__ import annotations

import functools


# long: it only wraps the class definition, built on first use
@functools.cache
def _preallocated_layer():
    """The cache layer class of `preallocated_cache` (built on first use: transformers is imported lazily)."""
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """DynamicLayer that writes new keys/values into a buffer of `capacity` positions (grown by copying only
        if a sequence outgrows it) and returns views of the filled part."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self._length, self._k, self._v = capacity, 0, None, None

        def _reserve(self, key_states, value_states, needed: int) -> None:
            if self._k is not None and needed <= self._k.shape[-2]:
                return
            size = max(needed, self.capacity, 2 * (self._k.shape[-2] if self._k is not None else 0))
            k = key_states.new_empty(*key_states.shape[:-2], size, key_states.shape[-1])
            v = value_states.new_empty(*value_states.shape[:-2], size, value_states.shape[-1])
            if self._length:
                k[..., :self._length, :] = self._k[..., :self._length, :]
                v[..., :self._length, :] = self._v[..., :self._length, :]
            self._k, self._v = k, v

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self._length + key_states.shape[-2]
            self._reserve(key_states, value_states, end)
            self._k[..., self._length:end, :] = key_states
            self._v[..., self._length:end, :] = value_states
            self._length = end
            self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
            return self.keys, self.values

        def _adopt(self) -> None:  # after a base-class edit replaced self.keys / self.values
            if self.is_initialized and self.keys is not None:
                self._k, self._v, self._length = self.keys.contiguous(), self.values.contiguous(), self.keys.shape[-2]

        def reset(self) -> None:
            super().reset()
            self._length, self._k, self._v = 0, None, None

        def reorder_cache(self, beam_idx) -> None:
            super().reorder_cache(beam_idx)
            self._adopt()

        def offload(self) -> None:
            raise NotImplementedError("the preallocated cache does not offload; use transformers' DynamicCache")

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            self._adopt()

        def batch_repeat_interleave(self, repeats: int) -> None:
            super().batch_repeat_interleave(repeats)
            self._adopt()

        def batch_select_indices(self, indices) -> None:
            super().batch_select_indices(indices)
            self._adopt()

    return PreallocatedLayer


def preallocated_cache(config, capacity: int):
    """A KV cache of `capacity` positions per layer for the decode loops (see the module docstring). Every layer
    is a full-attention layer (Janus' language model is a Llama); not for sliding-window configs. Only for inference
    (the loops run under no_grad: in-place writes would invalidate views saved for backward)."""
    from transformers.cache_utils import Cache

    layers = config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[_preallocated_layer()(capacity) for _ in range(layers)])
