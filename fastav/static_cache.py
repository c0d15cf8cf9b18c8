"""Static per-layer key/value caches for FastAV's pruned decoding, behind transformers' cache-layer interface.

After a pruned prefill every decoder layer holds its own number of keys (all of them before the first prune,
20-35% in the deep layers). A `PrunedStaticLayer` preallocates, once per generate call, a buffer sized to that
layer's prefill width plus the new tokens, rounded up to a bucket so that batches of similar clips share
shapes (and so one compiled graph); the batch axis is rounded up the same way. `generate()` drives it like any
static cache: `model.generate(..., cache_implementation="static")` builds transformers' `StaticCache`, and the
pruner swaps its layers for these when the prefill starts (`adopt`); `PrunedStaticCache` is the same thing
made up front, for callers that pass `past_key_values`.

Layout of one layer: slots [0, m) hold the prompt's kept keys in slot order (left aligned), generated keys go
to m, m+1, ... . Which slots a step may attend is `prompt_valid & (slot <= next_slot)`: prompt validity comes
from host-side knowledge written when the prefill ends, `next_slot` is a device counter bumped in place. No
step reads a device value back and no shape depends on a step, which is what compiling needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, StaticLayer
from transformers.utils import is_torchdynamo_compiling

DEFAULT_LENGTH_BUCKET = 256  # cache slots are allocated in multiples of this
POWERS_OF_TWO = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # batch buckets of the compiled decode


def round_up(value: int, step: int) -> int:
    return max(step, math.ceil(value / step) * step)


def batch_bucket(rows: int, buckets: Sequence[int] = ()) -> int:
    """The smallest bucket that holds `rows`; without buckets (or beyond the largest) `rows` itself."""
    return next((b for b in sorted(buckets) if b >= rows), rows)


class PrunedStaticLayer(StaticLayer):
    """One decoder layer's static keys/values, sized at the prefill to that layer's (pruned) width.

    `new_tokens` is how many tokens decoding may add; `length_bucket` rounds the buffer's slots up and
    `batch_buckets` its rows (only the compiled decode, which pads each step's batch, sets them). Nothing is
    allocated until the prefill's keys arrive; the prefill returns its own keys (attention over exactly what a
    dynamic cache would hold), decode steps return the whole buffer and the layer's mask (`decode_mask`)
    hides unwritten slots.
    """

    def __init__(
        self,
        new_tokens: int,
        length_bucket: int = DEFAULT_LENGTH_BUCKET,
        batch_buckets: Sequence[int] = (),
    ) -> None:
        super().__init__(max_cache_len=0)
        if new_tokens < 1:
            raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
        self.new_tokens, self.length_bucket, self.batch_buckets = new_tokens, length_bucket, tuple(batch_buckets)
        self.decoding = False  # a Python flag, not a tensor: compiled code guards on it for free
        self.prompt_width = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, width = key_states.shape[0], key_states.shape[-2]
        self.prompt_width = width
        self.max_cache_len = round_up(width + self.new_tokens, self.length_bucket)
        self.rows = batch_bucket(rows, self.batch_buckets)
        self.dtype, self.device = key_states.dtype, key_states.device
        self.batch_size, self.num_heads = rows, key_states.shape[1]
        self.k_head_dim, self.v_head_dim = key_states.shape[-1], value_states.shape[-1]
        self.keys = key_states.new_zeros((self.rows, self.num_heads, self.max_cache_len, self.k_head_dim))
        self.values = value_states.new_zeros((self.rows, self.num_heads, self.max_cache_len, self.v_head_dim))
        self.next_slot = torch.full((1,), width, dtype=torch.long, device=self.device)
        self.prompt_valid = torch.ones(self.rows, self.max_cache_len, dtype=torch.bool, device=self.device)
        self.cumulative_length = self.cumulative_length.to(self.device)
        if not is_torchdynamo_compiling():  # fixed addresses: in-place updates under CUDA graphs
            for tensor in (self.keys, self.values, self.next_slot, self.prompt_valid, self.cumulative_length):
                torch._dynamo.mark_static_address(tensor)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.decoding:
            if self.is_initialized:
                raise RuntimeError("a FastAV static cache holds one prefill; start a new cache for a new prompt")
            self.lazy_initialization(key_states, value_states)
            rows, width = key_states.shape[0], key_states.shape[-2]
            self.keys[:rows, :, :width] = key_states
            self.values[:rows, :, :width] = value_states
            return key_states, value_states
        self.keys.index_copy_(2, self.next_slot, key_states)
        self.values.index_copy_(2, self.next_slot, value_states)
        self.next_slot.add_(1)
        self.cumulative_length.add_(1)
        return self.keys, self.values

    def begin_decode(self, valid: torch.Tensor, prompt_length: int) -> None:
        """The prefill is over: `valid` (B, prompt_width) says which prompt slots hold real tokens; the model
        has seen `prompt_length` positions (what `get_seq_length` reports, pruned or not)."""
        rows, width = valid.shape
        if width != self.prompt_width:
            raise ValueError(f"prompt validity of width {width} for a layer that cached {self.prompt_width} keys")
        self.prompt_valid[:rows, :width] = valid
        self.prompt_valid[rows:, :width] = False  # bucket filler rows attend only their own new keys
        self.cumulative_length.fill_(prompt_length)
        self.decoding = True

    def decode_mask(self, additive_dtype: torch.dtype | None = None) -> torch.Tensor:
        """(rows, 1, 1, slots): where the current step's query may attend, i.e. valid prompt slots and generated
        slots up to and including the one this step writes. Bool (sdpa), or additive in `additive_dtype` (eager)."""
        slots = torch.arange(self.max_cache_len, device=self.device)
        mask = (self.prompt_valid & (slots <= self.next_slot))[:, None, None, :]
        if additive_dtype is None:
            return mask
        return torch.zeros((), dtype=additive_dtype, device=self.device).masked_fill(
            ~mask, torch.finfo(additive_dtype).min
        )

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return (self.max_cache_len, 0) if self.is_initialized else (query_length, 0)

    def allocated_bytes(self) -> int:
        if not self.is_initialized:
            return 0
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def reset(self) -> None:
        """Forget the prefill: the next one sizes the buffers anew."""
        self.is_initialized = self.decoding = False
        self.cumulative_length = torch.tensor(0, dtype=torch.long)


def adopt(
    cache: Cache,
    prompt_length: int,
    length_bucket: int = DEFAULT_LENGTH_BUCKET,
    batch_buckets: Sequence[int] = (),
) -> None:
    """Turn an empty transformers `StaticCache` (what `cache_implementation="static"` builds) into FastAV's:
    same object, its layers replaced, the new-token room being what the static cache left after the prompt."""
    if any(type(layer) is not StaticLayer or layer.is_initialized for layer in cache.layers):
        kinds = sorted({type(layer).__name__ for layer in cache.layers})
        raise ValueError(f"FastAV can take over an empty StaticCache of full-attention layers; got {kinds}")
    new_tokens = cache.layers[0].max_cache_len - prompt_length
    if new_tokens < 1:
        raise ValueError(f"the static cache holds {cache.layers[0].max_cache_len} tokens, the prompt {prompt_length}")
    cache.layers[:] = [PrunedStaticLayer(new_tokens, length_bucket, batch_buckets) for _ in cache.layers]


class PrunedStaticCache(Cache):
    """A static cache for a FastAV model, made by the caller: `generate(..., past_key_values=PrunedStaticCache(
    model.config, max_new_tokens))`. One per generate call: its sizes come from that call's prefill."""

    def __init__(
        self,
        config,
        new_tokens: int,
        length_bucket: int = DEFAULT_LENGTH_BUCKET,
        batch_buckets: Sequence[int] = (),
    ) -> None:
        layers = config.get_text_config(decoder=True).num_hidden_layers
        super().__init__(layers=[PrunedStaticLayer(new_tokens, length_bucket, batch_buckets) for _ in range(layers)])


def is_pruned(cache: object) -> bool:
    return isinstance(cache, Cache) and bool(cache.layers) and isinstance(cache.layers[0], PrunedStaticLayer)


def is_static(cache: object) -> bool:
    return isinstance(cache, Cache) and bool(cache.layers) and isinstance(cache.layers[0], StaticLayer)


def decoding(cache: object) -> bool:
    return is_pruned(cache) and cache.layers[0].decoding


def padding_mask(prepared: torch.Tensor | dict | None, length: int) -> torch.Tensor | None:
    """The (B, length) padding mask of a prefill, from the mask generate() prepared for a static cache: a dict
    by layer type or a 4-D (B, 1, q, slots) mask, bool (sdpa) or additive (eager). The last query of a row
    attends exactly that row's real tokens. None: no padding anywhere."""
    if isinstance(prepared, dict):
        prepared = prepared.get("full_attention", next(iter(prepared.values()), None))
    if prepared is None or prepared.ndim == 2:
        return prepared
    last = prepared[:, 0, -1, :length]
    return last if last.dtype == torch.bool else last == 0


def begin_decode(cache: Cache, valid_per_layer: Sequence[torch.Tensor], prompt_length: int) -> None:
    """End of the prefill: each layer's prompt validity (B, that layer's width)."""
    for layer, valid in zip(cache.layers, valid_per_layer, strict=True):
        layer.begin_decode(valid, prompt_length)


def bucket_key(cache: Cache) -> tuple[int, ...]:
    """What a compiled decode step's shapes depend on: the batch rows, then each layer's slots."""
    return (cache.layers[0].rows, *(layer.max_cache_len for layer in cache.layers))


def allocated_bytes(cache: Cache) -> int:
    return sum(layer.allocated_bytes() for layer in cache.layers)
