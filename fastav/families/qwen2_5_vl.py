"""Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`): video only, all frames in one vision span.

M-RoPE positions come from `mm_token_type_ids` (0 text, 1 image, 2 video); without it transformers silently
falls back to 1-D positions, so the processor's ids always travel with the inputs. The processor takes the
sample rate from the video metadata (its `fps=` argument alone leaves seconds-per-grid at 24 fps).
"""

from __future__ import annotations

import numpy as np
from transformers import PretrainedConfig

from fastav.families.base import Family, Prompt, token_layout
from fastav.layout import Layout


def video_metadata(frames: np.ndarray, fps: float) -> list[dict]:
    """The metadata the Qwen-VL video processors read timestamps and seconds-per-grid from: the decoded
    frames are the sampled ones, at `fps`."""
    return [{"fps": float(fps), "total_num_frames": len(frames), "frames_indices": list(range(len(frames)))}]


class Qwen25VL(Family):
    name = "qwen2_5_vl"
    title = "Qwen2.5-VL"
    classes = ("Qwen2_5_VLForConditionalGeneration",)
    modalities = ("video",)

    def layout(self, config: PretrainedConfig) -> Layout:
        return token_layout(config, video="video_token_id", audio=None, image="image_token_id")

    def video_kwargs(self, frames: np.ndarray, fps: float, prompt: Prompt) -> dict[str, object]:
        return dict(
            video_metadata=video_metadata(frames, fps),
            do_sample_frames=False,
            cap_pixels_per_frame=True,
            size={"shortest_edge": prompt.min_pixels, "longest_edge": prompt.max_pixels},
        )
