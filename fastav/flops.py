"""Prefill FLOPs of a decoder stack given the number of tokens each layer processes.

Two formulas, both summed over decoder layers l with n_l tokens (LM head and embeddings excluded: they are
the same pruned or not for the one position generate() reads):

* `real` (default) uses the model's real dimensions, counting a multiply-add as 2 FLOPs:
      q/o projections   2 * n * d * (H*hd) * 2
      k/v projections   2 * n * d * (Hkv*hd) * 2          (grouped-query attention)
      QK^T and AV       2 * n^2 * (H*hd) * 2               (full square, as FastV counts it)
      SwiGLU MLP        2 * n * d * m * 3                  (gate, up, down)
  plus FastAV's scoring cost at scoring layers: 2 * H*hd * n per scoring query row (`score_queries`, 1 by default).
* `fastv` is FastV's formula (arXiv 2403.06764), C(n) = 4nd^2 + 2n^2d + 2ndm, used by the paper's tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from transformers import PretrainedConfig


@dataclass(frozen=True)
class ModelDims:
    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> ModelDims:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            num_layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            ffn=config.intermediate_size,
        )


def layer_flops(n: float, dims: ModelDims) -> float:
    d, q_width, kv_width = dims.hidden, dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    projections = 2 * n * d * (2 * q_width + 2 * kv_width)
    attention = 4 * n * n * q_width
    mlp = 6 * n * d * dims.ffn
    return projections + attention + mlp


def fastv_layer_flops(n: float, dims: ModelDims) -> float:
    d, m = dims.hidden, dims.ffn
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def scoring_flops(n_keys: float, dims: ModelDims, queries: int = 1) -> float:
    return 2 * dims.heads * dims.head_dim * n_keys * queries


@dataclass(frozen=True)
class FlopsReport:
    unpruned: float
    pruned: float
    fastv_unpruned: float
    fastv_pruned: float

    @property
    def ratio(self) -> float:
        return self.pruned / self.unpruned if self.unpruned else 1.0

    @property
    def fastv_ratio(self) -> float:
        return self.fastv_pruned / self.fastv_unpruned if self.fastv_unpruned else 1.0


def prefill_flops(
    tokens_per_layer: Sequence[float], dims: ModelDims, scored_layers: Iterable[int] = (), score_queries: int = 1
) -> FlopsReport:
    """FLOPs of one sample's prefill: unpruned has tokens_per_layer[0] at every layer."""
    n0 = tokens_per_layer[0]
    scoring = sum(scoring_flops(tokens_per_layer[layer], dims, score_queries) for layer in scored_layers)
    return FlopsReport(
        unpruned=sum(layer_flops(n0, dims) for _ in tokens_per_layer),
        pruned=sum(layer_flops(n, dims) for n in tokens_per_layer) + scoring,
        fastv_unpruned=sum(fastv_layer_flops(n0, dims) for _ in tokens_per_layer),
        fastv_pruned=sum(fastv_layer_flops(n, dims) for n in tokens_per_layer),
    )
