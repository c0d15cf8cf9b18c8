"""Qwen3-Omni: the thinker (`Qwen3OmniMoeThinkerForConditionalGeneration`, an MoE decoder) prunes; a full
`Qwen3OmniMoeForConditionalGeneration` is pruned through its thinker.

Audio-in-video interleaves per temporal grid of frames inside one <vision_start><audio_start>...<audio_end>
span; every placeholder says what it is, so the layout is by token id, read from the loaded config (the
checkpoints' ids differ from the config class defaults). The forward needs `use_audio_in_video` and
`video_second_per_grid`. Deepstack adds visual features after the first k text layers through a mask over
the full-length sequence, so the first prunable layer is k (from the vision config).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PretrainedConfig

from fastav.families.base import Family, Prompt, token_layout
from fastav.layout import Layout

THINKER = "Qwen3OmniMoeThinkerForConditionalGeneration"
FULL = "Qwen3OmniMoeForConditionalGeneration"


class Qwen3Omni(Family):
    name = "qwen3_omni"
    title = "Qwen3-Omni (thinker, MoE)"
    classes = (THINKER, FULL)
    modalities = ("video", "audio")

    def top(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.thinker if hasattr(model, "thinker") else model

    def layout(self, config: PretrainedConfig) -> Layout:
        return token_layout(config, video="video_token_id", audio="audio_token_id", image="image_token_id")

    def load(self, path: str, architecture: str, dtype: torch.dtype, attn: str) -> torch.nn.Module:
        from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

        # From a full checkpoint this loads the `thinker.` weights only (talker and code2wav stay on disk).
        return Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=attn)

    def video_kwargs(self, frames: np.ndarray, fps: float, prompt: Prompt) -> dict[str, object]:
        return dict(
            fps=float(fps),
            do_sample_frames=False,
            cap_pixels_per_frame=True,
            # given on every call: the processor's class default would override the saved video size
            size={"shortest_edge": prompt.min_pixels, "longest_edge": prompt.max_pixels},
        )

    def audio_kwargs(self, audio: np.ndarray) -> dict[str, object]:
        return dict(audio=[audio], audio_from_video_indices=[0], load_audio_from_video=True)

    def forward_kwargs(self, audio_in_video: bool) -> dict[str, object]:
        return {"use_audio_in_video": audio_in_video}
