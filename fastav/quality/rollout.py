"""Attention rollout (Abnar & Zuidema 2020) of the last query, layer by layer, for one input.

The FastAV paper uses it to show that in later layers the last query draws on the early audio/video tokens.
For each decoder layer l, with M_l the head mean of its causal softmax attention (n x n):

    A_l = (1 - residual) * M_l + residual * I        (residual = 0.5: rows sum to 1)
    R_l = A_l @ R_{l-1},  R_{-1} = I
    row_l = R_l[-1]                                   (length n, sums to 1)

How: one `model(**inputs)` prefill with the text decoder's layers on the `fastav_rollout` attention function
(transformers' AttentionInterface). It returns the stock sdpa result, so the forward is unchanged, and beside it
folds the layer's attention into R from the post-RoPE query and key. Vision/audio towers keep their backend.

Why chunked: a layer's (heads, n, n) attention map of a long AV prompt (n ~ 10k) is several GiB. The map is
built `chunk` query rows at a time, and each chunk of A_l is folded into R at once, so not even M_l is kept.
Chunks run from the last row up: row i of A_l @ R only reads rows j <= i of R (A_l is causal), so R is updated
in place. Memory: one n x n float32 matrix (R: 400 MB at n = 10k) plus a (heads, chunk, n) float32 block.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import fastav
from fastav.families import resolve
from fastav.layout import COUNTED, MODALITY_NAMES, Layout, Modality, prunable_mask

NAME = "fastav_rollout"
AV = (Modality.VIDEO, Modality.AUDIO, Modality.IMAGE)


@dataclass(frozen=True)
class Rollout:
    """rows (L, n) float32: the last query's rollout row after each layer; labels (n,) Modality values."""

    rows: torch.Tensor
    labels: torch.Tensor

    def shares(self, early_fraction: float = 1 / 3) -> list[dict[str, float]]:
        """Per layer: rollout mass per modality, and on the earliest `early_fraction` of the AV tokens vs the rest."""
        av = prunable_mask(self.labels, AV)
        early = torch.zeros_like(av)
        early[av.nonzero().flatten()[: round(early_fraction * int(av.sum()))]] = True
        masks = {MODALITY_NAMES[m]: self.labels == m for m in COUNTED} | {"av_early": early, "av_late": av & ~early}
        return [
            {"layer": layer} | {name: round(float(row.double()[mask].sum()), 6) for name, mask in masks.items()}
            for layer, row in enumerate(self.rows)
        ]

    def binned(self, bins: int = 64) -> torch.Tensor:
        """(L, bins): rollout mass per equal-width bin of positions; position p falls in bin p * bins // n."""
        n = self.rows.shape[1]
        index = torch.arange(n) * bins // n
        return torch.zeros(self.rows.shape[0], bins).index_add_(1, index, self.rows)

    def to_json(self, bins: int = 64, early_fraction: float = 1 / 3) -> dict:
        n = self.rows.shape[1]
        return {
            "num_layers": self.rows.shape[0],
            "num_tokens": n,
            "tokens": {name: int((self.labels == m).sum()) for m, name in MODALITY_NAMES.items()},
            "early_fraction": early_fraction,
            "layers": self.shares(early_fraction),
            "bin_edges": [-(-b * n // bins) for b in range(bins + 1)],  # bin b holds positions [edge b, edge b+1)
            "binned": [[round(x, 6) for x in row] for row in self.binned(bins).tolist()],
        }


class _Collector:
    """Folds each layer's attention into the rollout matrix R as the layer runs."""

    def __init__(self, valid: torch.Tensor, residual: float, chunk: int) -> None:
        self.valid, self.residual, self.chunk = valid, residual, chunk  # valid (n,): False at padding
        self.rollout: torch.Tensor | None = None
        self.rows: dict[int, torch.Tensor] = {}

    def fold(self, layer: int, query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
        _, heads, n, dim = query.shape
        if key.shape[2] != n or n != self.valid.shape[0]:
            raise RuntimeError(f"rollout expects one prefill of {self.valid.shape[0]} tokens, got {n} queries")
        if self.rollout is None:
            self.rollout = torch.eye(n, device=query.device)
        rollout, valid = self.rollout, self.valid.to(self.rollout.device)
        kv_heads = key.shape[1]  # grouped-query: head h reads kv head h // (heads // kv_heads)
        q = query[0].to(rollout.device, torch.float32).reshape(kv_heads, heads // kv_heads, n, dim)
        k = key[0].to(rollout.device, torch.float32)
        for start in reversed(range(0, n, self.chunk)):
            end = min(start + self.chunk, n)
            rows = torch.arange(start, end, device=rollout.device)[:, None]
            cols = torch.arange(end, device=rollout.device)[None, :]
            # causal; padding keys hidden, but every query sees itself (a padding row is then the identity row)
            visible = (cols <= rows) & (valid[:end] | (cols == rows))
            logits = torch.einsum("kgqd,knd->kgqn", q[:, :, start:end], k[:, :end]) * scaling
            mix = (1 - self.residual) * logits.masked_fill(~visible, float("-inf")).softmax(-1).mean(dim=(0, 1))
            mix[:, start:end].diagonal().add_(self.residual)
            rollout[start:end, :end] = mix @ rollout[:end, :end]  # rows >= end are done, rows < end still R_{l-1}
        self.rows[layer] = rollout[-1].to("cpu", copy=True)  # .cpu() alone would alias R on a CPU run


# Attention module of a text decoder layer -> (collector, layer index), only while attention_rollout runs.
_ACTIVE: weakref.WeakKeyDictionary[torch.nn.Module, tuple[_Collector, int]] = weakref.WeakKeyDictionary()


def _rollout_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    entry = _ACTIVE.get(module)
    if entry is not None:
        collector, layer = entry
        collector.fold(layer, query, key, scaling if scaling is not None else query.shape[-1] ** -0.5)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, scaling=scaling, **kwargs)


def _register() -> None:
    if NAME not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(NAME, _rollout_attention)
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def attention_rollout(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor | None = None,
    layout: Layout | None = None,
    residual: float = 0.5,
    chunk: int = 256,
) -> Rollout:
    """Rollout rows of the last query for one input (batch 1) of a supported decoder.

    `inputs`: the model's forward kwargs. Position labels: `labels` (1, n) Modality values, else
    `layout.labels(...)`, else the model's default layout (Qwen2.5-Omni's token ids).
    """
    adapter = resolve(model)
    if fastav.pruner_of(model) is not None:
        raise ValueError("FastAV is enabled on this model: call fastav.disable(model) before attention_rollout")
    ids = inputs.get("input_ids")
    first = ids if ids is not None else inputs.get("inputs_embeds")
    if first is None:
        raise ValueError("inputs need input_ids or inputs_embeds")
    batch, n = first.shape[:2]
    if batch != 1:
        raise ValueError(f"attention_rollout takes one input (batch 1), got batch {batch}: call it per sample")
    mask = inputs.get("attention_mask")
    valid = mask.bool() if mask is not None else torch.ones(1, n, dtype=torch.bool, device=first.device)
    if not bool(valid[0, -1]):
        raise ValueError("the last position is padding: the rollout row of the last query needs left padding")
    if labels is None:
        layout = layout if layout is not None else adapter.default_layout
        if layout is None:
            raise ValueError(
                f"no token layout for {adapter.family}: pass labels= (a (1, n) tensor of fastav.Modality values) "
                "or layout= (e.g. a fastav.TokenIdLayout or SpanLayout)"
            )
        labels = layout.labels(ids, valid)
    if labels.shape != (1, n):
        raise ValueError(f"labels have shape {tuple(labels.shape)}, expected {(1, n)}")

    _register()
    collector = _Collector(valid[0], residual, chunk)
    configs = {id(c): c for c in [adapter.text_config] + [layer.self_attn.config for layer in adapter.layers]}
    original = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for config in configs.values():
            config._attn_implementation = NAME
        for i, layer in enumerate(adapter.layers):
            _ACTIVE[layer.self_attn] = (collector, i)
        with torch.inference_mode():
            model(**{"use_cache": False, **inputs})
    finally:
        for layer in adapter.layers:
            _ACTIVE.pop(layer.self_attn, None)
        for key, config in configs.items():
            config._attn_implementation = original[key]
    missing = sorted(set(range(adapter.num_layers)) - set(collector.rows))
    if missing:
        raise RuntimeError(f"layers {missing} did not run through the rollout attention")
    rows = torch.stack([collector.rows[i] for i in range(adapter.num_layers)])
    return Rollout(rows=rows, labels=labels[0].long().cpu())
