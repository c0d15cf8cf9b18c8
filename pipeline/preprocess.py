"""Preprocess: the model's own processor turns decoded frames + audio + prompt into model inputs.

The processor is loaded from the checkpoint (`AutoProcessor.from_pretrained`), once per worker process; how a
family calls it (audio-in-video interleaving for the Omni models, video metadata for the Qwen-VL ones) lives
in its module under `fastav.families`.
"""

from __future__ import annotations

import functools

import numpy as np

from fastav.families import for_directory
from fastav.families.base import Family
from pipeline.config import PromptConfig


@functools.lru_cache(maxsize=2)
def load_processor(path: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)


@functools.lru_cache(maxsize=4)
def checkpoint_family(path: str, family: str = "auto") -> Family:
    """The family of a local checkpoint directory (UnsupportedModelError if none, or if `family` disagrees)."""
    return for_directory(path, family)[0]


def video_inputs(
    family: Family,
    processor,
    frames: np.ndarray,
    sample_fps: float,
    audio: np.ndarray | None,
    prompt: PromptConfig,
    user: str | None = None,
) -> dict[str, np.ndarray]:
    """One video's model inputs. The audio goes in only where the family takes audio."""
    return family.processor_inputs(processor, frames, sample_fps, audio if family.takes_audio() else None, prompt, user)
