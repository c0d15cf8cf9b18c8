"""What the pruner needs to know about one loaded model, and the checks every model passes before pruning.

Model families (`fastav.families`) build an Adapter from a model instance; the pruning core reads only this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from fastav.attention import PREFIX, SUPPORTED_BACKENDS
from fastav.flops import ModelDims
from fastav.layout import Layout


class UnsupportedModelError(TypeError):
    """The model or its attention backend is not one FastAV can prune correctly."""


@dataclass(frozen=True)
class Adapter:
    family: str
    top: torch.nn.Module  # the module users call (forward / generate)
    text_model: torch.nn.Module  # owns `layers`, builds the mask and rotary embeddings
    text_config: PretrainedConfig
    default_layout: Layout | None  # None: the caller must give spans or labels
    min_prune_layer: int = 1  # the first layer tokens may be dropped before (deepstack: after its last layer)
    min_prune_reason: str = ""  # why layers before it are not prunable, for error messages
    dims: ModelDims | None = None  # for FLOPs; None: read from text_config

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.text_model.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def model_dims(self) -> ModelDims:
        return self.dims if self.dims is not None else ModelDims.from_config(self.text_config)


# Layer kinds whose state is not a per-token KV cache, or whose keys are not the layer's own full-length ones:
# dropping a token there cannot be reproduced by masking its key, so the pruned model would not be exact.
_LAYER_KINDS = {
    "sliding_attention": "sliding-window attention",
    "chunked_attention": "chunked attention",
    "linear_attention": "linear attention / recurrent state",
    "mamba": "Mamba (state-space) layers",
    "hybrid": "hybrid recurrent layers",
}


def unprunable_layers(config: PretrainedConfig | Mapping) -> list[str]:
    """Descriptions of the decoder layer kinds FastAV cannot prune exactly; [] when every layer is full attention.

    Takes a config object or the dict of a config.json (searched through its text/thinker sub-configs), so a
    checkpoint can be checked before its weights are loaded.
    """
    data = config.to_dict() if isinstance(config, PretrainedConfig) else dict(config)
    found: list[str] = []
    for cfg in _text_configs(data):
        kinds = list(cfg.get("layer_types") or cfg.get("layers_block_type") or [])
        for kind in dict.fromkeys(kinds):
            if kind in ("full_attention", "attention", "moe", "mlp"):
                continue
            found.append(f"{_LAYER_KINDS.get(kind, kind)} ({kind!r} layers)")
        if cfg.get("use_sliding_window") and cfg.get("sliding_window") and not kinds:
            found.append("sliding-window attention (use_sliding_window: true)")
        if cfg.get("num_kv_shared_layers"):
            found.append(f"KV-shared layers (num_kv_shared_layers: {cfg['num_kv_shared_layers']})")
        if cfg.get("hybrid_override_pattern"):
            found.append(f"Mamba/hybrid layers (hybrid_override_pattern: {cfg['hybrid_override_pattern']!r})")
    return list(dict.fromkeys(found))


def _text_configs(data: Mapping) -> list[Mapping]:
    """The config dict itself and every nested decoder config (text_config, thinker_config.text_config, ...)."""
    out = [data]
    for key in ("text_config", "thinker_config", "llm_config", "language_config"):
        sub = data.get(key)
        if isinstance(sub, Mapping):
            out.extend(_text_configs(sub))
    return out


def check_model(name: str, text_config: PretrainedConfig) -> None:
    """Refuse layer kinds and attention backends FastAV cannot prune exactly, naming what was found."""
    layers = unprunable_layers(text_config)
    if layers:
        raise UnsupportedModelError(
            f"FastAV cannot prune {name} exactly: its decoder has {', '.join(layers)}; per-layer pruned KV caches "
            "are exact for full-attention layers only"
        )
    backend = text_config._attn_implementation
    if backend not in SUPPORTED_BACKENDS and not (backend or "").startswith(PREFIX):
        raise UnsupportedModelError(
            f"attention backend {backend!r} is not supported; load the model with attn_implementation= one of "
            f"{', '.join(SUPPORTED_BACKENDS)}"
        )
