"""The model family registry: one module per family, found by the checkpoint's `architectures` or by the class
of a loaded model.

Support is explicit: a family is listed only when the exact-equivalence tests cover it. Subclasses of a listed
transformers class inherit its support. Anything else is refused with an error naming what was found (and,
for decoders with layers FastAV cannot prune exactly, the layer kind), never run unpruned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from fastav.adapter import Adapter, UnsupportedModelError, unprunable_layers
from fastav.families.base import Family
from fastav.families.decoders import LlamaDecoder, Qwen2Decoder
from fastav.families.qwen2_5_omni import Qwen25Omni
from fastav.families.qwen2_5_vl import Qwen25VL
from fastav.families.qwen3_omni import Qwen3Omni
from fastav.families.qwen3_vl import Qwen3VL

FAMILIES: dict[str, Family] = {
    f.name: f for f in (Qwen25Omni(), Qwen3Omni(), Qwen3VL(), Qwen25VL(), Qwen2Decoder(), LlamaDecoder())
}
_BY_CLASS: dict[str, Family] = {cls: family for family in FAMILIES.values() for cls in family.classes}
_BY_ARCHITECTURE: dict[str, Family] = {
    **_BY_CLASS,
    **{alias: family for family in FAMILIES.values() for alias in family.aliases},
}


def supported_classes() -> list[str]:
    return sorted(_BY_CLASS)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def _refusal(found: str, config: Mapping | None = None) -> UnsupportedModelError:
    layers = unprunable_layers(config) if config is not None else []
    if layers:
        return UnsupportedModelError(
            f"FastAV cannot prune {found} exactly: its decoder has {', '.join(layers)}; per-layer pruned KV caches "
            f"are exact for full-attention layers only. Supported: {', '.join(supported_classes())}"
        )
    return UnsupportedModelError(
        f"FastAV does not support {found}: supported classes are {', '.join(supported_classes())}. For "
        "VideoLLaMA2-AV / video-SALMONN2 wrap their Qwen2 decoder with a preset layout."
    )


def family_of(model: torch.nn.Module) -> Family:
    """The family of a loaded model: its class or the supported transformers class it derives from."""
    for cls in type(model).__mro__:
        if cls.__name__ in _BY_CLASS and cls.__module__.startswith("transformers."):
            return _BY_CLASS[cls.__name__]
    config = getattr(model, "config", None)
    raise _refusal(type(model).__name__, config.to_dict() if config is not None else None)


def resolve(model: torch.nn.Module) -> Adapter:
    """What the pruner needs to know about `model`; raises UnsupportedModelError naming why not."""
    return family_of(model).adapter(model)


def for_directory(path: str | Path, family: str = "auto") -> tuple[Family, str]:
    """`for_checkpoint` of a local checkpoint directory's config.json."""
    return for_checkpoint(json.loads((Path(path) / "config.json").read_text()), family)


def require_video(family: Family, architecture: str) -> None:
    """Refuse a family the video pipeline cannot feed (a text decoder), naming the ones it can."""
    if "video" not in family.modalities:
        takes_video = [f.title for f in FAMILIES.values() if "video" in f.modalities]
        raise UnsupportedModelError(
            f"{architecture} ({family.title}) takes no video; the pipeline runs {', '.join(takes_video)} checkpoints"
        )


def for_checkpoint(config: Mapping, family: str = "auto") -> tuple[Family, str]:
    """The family and architecture of a checkpoint from its config.json (a dict), before any weights load.

    `family` other than "auto" must agree with the checkpoint. Raises UnsupportedModelError naming the
    architectures found and the supported ones, or the layer kinds FastAV cannot prune exactly.
    """
    architectures = list(config.get("architectures") or [])
    layers = unprunable_layers(config)
    match = next((a for a in architectures if a in _BY_ARCHITECTURE), None)
    if match is None or layers:
        found = ", ".join(architectures) if architectures else f"model_type {config.get('model_type')!r}"
        raise _refusal(f"checkpoint with architectures [{found}]", config)
    detected = _BY_ARCHITECTURE[match]
    if family != "auto" and get_family(family) is not detected:
        raise UnsupportedModelError(
            f"model.family is {family!r} but the checkpoint is {match} (family {detected.name!r}); set "
            f"model.family: auto or {detected.name}"
        )
    return detected, match
