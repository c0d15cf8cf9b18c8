"""FastAV: training-free audio/video token pruning inside AV-LLMs (arXiv 2601.13143) for transformers v5.

pruner = fastav.enable(model, FastAVConfig())       # or fastav.enable(model, preset="videollama2-av")
out = model.generate(**inputs, max_new_tokens=64)   # pruned prefill, decode on the pruned caches
pruner.stats                                        # one SampleStats per row of the last prefill
fastav.disable(model)                               # the model is exactly as before

The pruning core is this package's top level; `fastav.families` holds one module per model family (the layout,
first prunable layer and processor inputs of Qwen2.5-Omni, Qwen3-Omni, Qwen3-VL, Qwen2.5-VL and plain
decoders), `fastav.quality` the quality tools (agreement, calibration, attention rollout).
"""

from __future__ import annotations

import weakref

import torch

from fastav.adapter import UnsupportedModelError
from fastav.config import FastAVConfig
from fastav.families import FAMILIES, family_of, resolve, supported_classes
from fastav.layout import Layout, Modality, SpanLayout, TokenIdLayout
from fastav.plan import PlanError
from fastav.presets import PRESETS, Preset, get_preset
from fastav.pruner import Pruner
from fastav.stats import SampleStats

__all__ = [
    "FAMILIES",
    "PRESETS",
    "FastAVConfig",
    "Layout",
    "Modality",
    "PlanError",
    "Preset",
    "Pruner",
    "SampleStats",
    "SpanLayout",
    "TokenIdLayout",
    "UnsupportedModelError",
    "disable",
    "enable",
    "family_of",
    "get_preset",
    "pruner_of",
    "supported_classes",
]

_ENABLED: weakref.WeakKeyDictionary[torch.nn.Module, Pruner] = weakref.WeakKeyDictionary()


def enable(
    model: torch.nn.Module,
    config: FastAVConfig | None = None,
    *,
    preset: str | Preset | None = None,
    layout: Layout | None = None,
) -> Pruner:
    """Install FastAV on `model` in place and return its Pruner.

    `preset` supplies a layout and a default config (e.g. "videollama2-av" over a Qwen2 decoder fed
    inputs_embeds); an explicit `config` or `layout` overrides the preset's.
    """
    if model in _ENABLED:
        raise RuntimeError("FastAV is already enabled on this model; call fastav.disable(model) first")
    if preset is not None:
        preset = get_preset(preset) if isinstance(preset, str) else preset
        config = config if config is not None else preset.config
        layout = layout if layout is not None else preset.layout
    pruner = Pruner(resolve(model), config if config is not None else FastAVConfig(), layout)
    pruner.attach()
    _ENABLED[model] = pruner
    return pruner


def disable(model: torch.nn.Module) -> None:
    """Remove FastAV from `model`: hooks, scoring attention and state. A no-op if it was not enabled."""
    pruner = _ENABLED.pop(model, None)
    if pruner is not None:
        pruner.detach()


def pruner_of(model: torch.nn.Module) -> Pruner | None:
    return _ENABLED.get(model)
