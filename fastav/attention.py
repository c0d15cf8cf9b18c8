"""Scoring beside the fast kernel, plugged in through transformers' AttentionInterface.

For every supported backend B (sdpa, eager, flash_attention_2) we register `fastav_B`: at a scoring layer
during prefill it computes the last query's softmax attention over the current keys, averaged over heads
(one query row, never an n x n map), hands it to the pruner that owns the module, and then delegates to the
stock `B` function unchanged. The same name is registered with AttentionMaskInterface so transformers
builds the mask it would build for `B` (without that, no mask is built and padding silently breaks).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Protocol

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward

SUPPORTED_BACKENDS = ("sdpa", "eager", "flash_attention_2")
PREFIX = "fastav_"


class ScoreSink(Protocol):
    def wants_scores(self, layer_idx: int) -> bool: ...

    def key_valid(self) -> torch.Tensor: ...

    @property
    def score_queries(self) -> int: ...

    def put_scores(self, layer_idx: int, scores: torch.Tensor) -> None: ...


# Attention module -> the pruner that owns it. Weak keys: a deleted model frees its entries.
_OWNERS: weakref.WeakKeyDictionary[torch.nn.Module, ScoreSink] = weakref.WeakKeyDictionary()


def attach(module: torch.nn.Module, owner: ScoreSink) -> None:
    _OWNERS[module] = owner


def detach(module: torch.nn.Module) -> None:
    _OWNERS.pop(module, None)


def last_query_scores(
    query: torch.Tensor, key: torch.Tensor, key_valid: torch.Tensor, scaling: float, queries: int = 1
) -> torch.Tensor:
    """Softmax attention of each row's last `queries` query rows over its keys, averaged over heads and rows.

    query (B, H, q, D) and key (B, Hkv, kv, D) post-RoPE, grouped-query aware; key_valid (B, kv) hides
    padding and filler slots. The last query sees every earlier key; earlier ones of the `queries` get the
    causal mask (slots are in order, the queries are the last slots). Returns (B, kv) float32.
    No host read: everything stays on the device.
    """
    batch, heads, length, dim = query.shape
    kv_heads, kv = key.shape[1], key.shape[2]
    queries = min(queries, length)
    q_last = query[:, :, -queries:, :].float().reshape(batch, kv_heads, heads // kv_heads, queries, dim)
    logits = torch.einsum("bkgqd,bknd->bkgqn", q_last, key.float()) * scaling
    hidden = ~key_valid[:, None, None, None, :]
    if queries == 1:
        return logits.masked_fill(hidden, float("-inf")).softmax(dim=-1).mean(dim=(1, 2, 3))
    # query j sits at slot kv - queries + j and sees keys up to it; filler query slots (a row with fewer real
    # tokens than `queries`) are left out of the mean
    slot = torch.arange(kv, device=key.device)
    hidden = hidden | (slot[None, :] > (kv - queries + torch.arange(queries, device=key.device))[:, None])
    probs = logits.masked_fill(hidden, float("-inf")).softmax(dim=-1)
    query_valid = key_valid[:, -queries:]
    probs = probs.masked_fill(~query_valid[:, None, None, :, None], 0.0)
    return probs.sum(dim=(1, 2, 3)) / (heads * query_valid.sum(-1, keepdim=True))


def _scoring(backend: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    def attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
        owner = _OWNERS.get(module)
        layer_idx = getattr(module, "layer_idx", None)
        if owner is not None and layer_idx is not None and owner.wants_scores(layer_idx):
            scale = scaling if scaling is not None else query.shape[-1] ** -0.5
            owner.put_scores(layer_idx, last_query_scores(query, key, owner.key_valid(), scale, owner.score_queries))
        stock = eager_attention_forward if backend == "eager" else ALL_ATTENTION_FUNCTIONS[backend]
        return stock(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    attention.__name__ = f"{PREFIX}{backend}"
    return attention


def register_backends() -> None:
    """Idempotent: register `fastav_<backend>` for attention and for mask creation."""
    for backend in SUPPORTED_BACKENDS:
        name = PREFIX + backend
        if name not in ALL_ATTENTION_FUNCTIONS:
            AttentionInterface.register(name, _scoring(backend))
        if name not in ALL_MASK_ATTENTION_FUNCTIONS:
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[backend])


def scoring_name(backend: str) -> str:
    return PREFIX + backend
