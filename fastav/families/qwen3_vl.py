"""Qwen3-VL, dense (`Qwen3VLForConditionalGeneration`) and MoE (`Qwen3VLMoeForConditionalGeneration`): video only.

Each temporal grid of frames gets its own vision span behind a text timestamp ("<3.8 seconds>"); timestamps
are text and are never pruned. Deepstack: after text layers 0..k-1 (k = len(vision_config.
deepstack_visual_indexes)) the model adds visual features through a boolean mask over the full-length
sequence, so the first prunable layer is k. Positions need `mm_token_type_ids` (the model raises without it).
"""

from __future__ import annotations

import numpy as np
from transformers import PretrainedConfig

from fastav.families.base import Family, Prompt, token_layout
from fastav.families.qwen2_5_vl import video_metadata
from fastav.layout import Layout


class Qwen3VL(Family):
    name = "qwen3_vl"
    title = "Qwen3-VL (dense and MoE)"
    classes = ("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration")
    modalities = ("video",)

    def layout(self, config: PretrainedConfig) -> Layout:
        return token_layout(config, video="video_token_id", audio=None, image="image_token_id")

    def video_kwargs(self, frames: np.ndarray, fps: float, prompt: Prompt) -> dict[str, object]:
        return dict(
            video_metadata=video_metadata(frames, fps),
            do_sample_frames=False,
            # Qwen3-VL's video size bounds count the pixels of the whole clip: the per-frame bounds times the frames
            size={"shortest_edge": prompt.min_pixels * len(frames), "longest_edge": prompt.max_pixels * len(frames)},
            cap_pixels_per_frame=False,  # the bounds above are already per frame times the frames
        )
