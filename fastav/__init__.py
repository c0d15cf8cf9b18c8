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

import importlib
import importlib.util
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from fastav.adapter import UnsupportedModelError
    from fastav.config import FastAVConfig
    from fastav.families import FAMILIES, family_of, supported_classes
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

# The public names live in submodules, imported on first use (PEP 562): `import fastav.config` (what validating a
# job config needs) then imports pydantic only, not torch and the model families.
_LAZY = {
    "UnsupportedModelError": "fastav.adapter",
    "FastAVConfig": "fastav.config",
    "FAMILIES": "fastav.families",
    "family_of": "fastav.families",
    "resolve": "fastav.families",
    "supported_classes": "fastav.families",
    "Layout": "fastav.layout",
    "Modality": "fastav.layout",
    "SpanLayout": "fastav.layout",
    "TokenIdLayout": "fastav.layout",
    "PlanError": "fastav.plan",
    "PRESETS": "fastav.presets",
    "Preset": "fastav.presets",
    "get_preset": "fastav.presets",
    "Pruner": "fastav.pruner",
    "SampleStats": "fastav.stats",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: fastav.families, fastav.quality, ...
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    from fastav.families import resolve
    from fastav.presets import get_preset
    from fastav.pruner import Pruner

    if preset is not None:
        preset = get_preset(preset) if isinstance(preset, str) else preset
        config = config if config is not None else preset.config
        layout = layout if layout is not None else preset.layout
    if config is None:
        from fastav.config import FastAVConfig

        config = FastAVConfig()
    pruner = Pruner(resolve(model), config, layout)
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
