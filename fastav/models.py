"""Which models FastAV supports, and where their text decoder and token layout live.

Support is explicit: a family is listed only when the exact-equivalence tests cover it. Subclasses of a listed
transformers class (e.g. VideoLLaMA2-AV's own Qwen2ForCausalLM subclass) inherit its support. Anything else
is refused with an error naming what was found, never run unpruned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from fastav.attention import PREFIX, SUPPORTED_BACKENDS
from fastav.layout import Layout, TokenIdLayout


class UnsupportedModelError(TypeError):
    """The model or its attention backend is not one FastAV can prune correctly."""


@dataclass(frozen=True)
class Adapter:
    """What the pruner needs to know about one model instance."""

    family: str
    top: torch.nn.Module  # the module users call (forward / generate)
    text_model: torch.nn.Module  # owns `layers`, builds the mask and rotary embeddings
    text_config: PretrainedConfig
    default_layout: Layout | None  # None: the caller must give spans or labels
    min_prune_layer: int = 1

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.text_model.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _omni_layout(config: PretrainedConfig) -> TokenIdLayout:
    return TokenIdLayout(
        video_ids=frozenset({config.video_token_id}),
        audio_ids=frozenset({config.audio_token_id}),
        image_ids=frozenset({config.image_token_id}),
    )


# class name -> (family, path from the top module to the text model, layout from the top config)
_FAMILIES = {
    "Qwen2ForCausalLM": ("qwen2", "model", None),
    "LlamaForCausalLM": ("llama", "model", None),
    "Qwen2_5OmniThinkerForConditionalGeneration": ("qwen2_5_omni", "model.language_model", _omni_layout),
}


def supported_classes() -> list[str]:
    return sorted(_FAMILIES)


def _supported_base(model: torch.nn.Module) -> str | None:
    """The supported transformers class `model` is or derives from (e.g. VideoLLaMA2's Qwen2 subclass)."""
    for cls in type(model).__mro__:
        if cls.__name__ in _FAMILIES and cls.__module__.startswith("transformers."):
            return cls.__name__
    return None


def resolve(model: torch.nn.Module) -> Adapter:
    name = _supported_base(model)
    if name is None:
        raise UnsupportedModelError(
            f"FastAV does not support {type(model).__name__}: supported classes are {', '.join(supported_classes())}. "
            "For Qwen2.5-Omni load the thinker (Qwen2_5OmniThinkerForConditionalGeneration); for "
            "VideoLLaMA2-AV / video-SALMONN2 wrap their Qwen2 decoder with a preset layout."
        )
    family, path, layout_fn = _FAMILIES[name]
    text_model = model.get_submodule(path) if path else model
    text_config = text_model.config
    layer_types = getattr(text_config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        raise UnsupportedModelError(
            f"{name} has non-full-attention layers ({sorted(set(layer_types))}); FastAV's per-layer pruned "
            "caches are verified for full attention only"
        )
    backend = text_config._attn_implementation
    if backend not in SUPPORTED_BACKENDS and not (backend or "").startswith(PREFIX):
        raise UnsupportedModelError(
            f"attention backend {backend!r} is not supported; load the model with attn_implementation= one of "
            f"{', '.join(SUPPORTED_BACKENDS)}"
        )
    layout = layout_fn(model.config) if layout_fn else None
    return Adapter(family, model, text_model, text_config, layout)
