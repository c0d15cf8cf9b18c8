"""Prefill FLOPs of a decoder stack given the number of tokens each layer processes.

Two formulas, both summed over decoder layers l with n_l tokens (LM head and embeddings excluded: they are
the same pruned or not for the one position generate() reads):

* `real` (default) uses the model's real dimensions, counting a multiply-add as 2 FLOPs:
      q/o projections   2 * n * d * (H*hd) * 2
      k/v projections   2 * n * d * (Hkv*hd) * 2          (grouped-query attention)
      QK^T and AV       2 * n^2 * (H*hd) * 2               (full square, as FastV counts it)
      SwiGLU MLP        2 * n * d * m * 3                  (gate, up, down)
  where an MoE layer's m is the width a token actually runs: k active experts of width m_e plus any shared
  expert, and its router adds 2 * n * d * E (E experts; a shared-expert gate adds 2 * n * d). Layers an MoE
  model keeps dense (`mlp_only_layers`, `decoder_sparse_step`) use the dense width.
  Plus FastAV's scoring cost at scoring layers: 2 * H*hd * n per scoring query row (`score_queries`, 1 by default;
  a prompt shorter than that scores with all its n rows).
* `fastv` is FastV's formula (arXiv 2403.06764), C(n) = 4nd^2 + 2n^2d + 2ndm, used by the paper's tables, with
  the same per-token MLP width m.
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
    ffn: int  # dense MLP width (every layer of a dense model; the dense layers of an MoE model)
    experts: int = 0  # routed experts per MoE layer (0: a dense model)
    experts_per_token: int = 0
    expert_ffn: int = 0
    shared_expert_ffn: int = 0
    dense_layers: frozenset[int] = frozenset()  # layers of an MoE model that keep a dense MLP

    def kv_bytes_per_token(self, element_size: int) -> int:
        """Bytes one token's keys and values take in one layer's cache."""
        return 2 * self.kv_heads * self.head_dim * element_size

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> ModelDims:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        layers = config.num_hidden_layers
        experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None) or 0
        moe = {}
        if experts and getattr(config, "moe_intermediate_size", None):
            step = getattr(config, "decoder_sparse_step", 1) or 1
            only_mlp = set(getattr(config, "mlp_only_layers", None) or ())
            moe = dict(
                experts=experts,
                experts_per_token=config.num_experts_per_tok,
                expert_ffn=config.moe_intermediate_size,
                shared_expert_ffn=getattr(config, "shared_expert_intermediate_size", None) or 0,
                dense_layers=frozenset(l for l in range(layers) if l in only_mlp or (l + 1) % step != 0),
            )
        return cls(
            num_layers=layers,
            hidden=config.hidden_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            ffn=getattr(config, "intermediate_size", None) or 0,
            **moe,
        )

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    def mlp_width(self, layer: int) -> int:
        """The MLP width one token runs through at `layer`: dense, or the active experts plus a shared one."""
        if not self.is_moe or layer in self.dense_layers:
            return self.ffn
        return self.experts_per_token * self.expert_ffn + self.shared_expert_ffn

    def router_flops_per_token(self, layer: int) -> float:
        if not self.is_moe or layer in self.dense_layers:
            return 0.0
        return 2 * self.hidden * (self.experts + (1 if self.shared_expert_ffn else 0))


def layer_flops(n: float, dims: ModelDims, layer: int = 0) -> float:
    d, q_width, kv_width = dims.hidden, dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    projections = 2 * n * d * (2 * q_width + 2 * kv_width)
    attention = 4 * n * n * q_width
    mlp = 6 * n * d * dims.mlp_width(layer) + n * dims.router_flops_per_token(layer)
    return projections + attention + mlp


def fastv_layer_flops(n: float, dims: ModelDims, layer: int = 0) -> float:
    d, m = dims.hidden, dims.mlp_width(layer)
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def scoring_flops(n_keys: float, dims: ModelDims, queries: int = 1) -> float:
    """The scoring rows' q.K^T: at most as many query rows as there are tokens (what is computed)."""
    return 2 * dims.heads * dims.head_dim * n_keys * min(queries, n_keys)


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
    layers = range(len(tokens_per_layer))
    return FlopsReport(
        unpruned=sum(layer_flops(n0, dims, l) for l in layers),
        pruned=sum(layer_flops(n, dims, l) for l, n in zip(layers, tokens_per_layer, strict=True)) + scoring,
        fastv_unpruned=sum(fastv_layer_flops(n0, dims, l) for l in layers),
        fastv_pruned=sum(fastv_layer_flops(n, dims, l) for l, n in zip(layers, tokens_per_layer, strict=True)),
    )
