"""Qwen2.5-Omni: the thinker (`Qwen2_5OmniThinkerForConditionalGeneration`) prunes; a full
`Qwen2_5OmniForConditionalGeneration` is pruned through its thinker.

Audio-in-video interleaves per 2-s chunk, [video tokens][audio tokens], sharing TMRoPE's time axis; every
placeholder says what it is, so the layout is by token id. Decode positions come from the 2-D mask and
`rope_deltas`, which in-LLM pruning leaves alone.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PretrainedConfig

from fastav.families.base import Family, Prompt, token_layout
from fastav.layout import Layout

THINKER = "Qwen2_5OmniThinkerForConditionalGeneration"
FULL = "Qwen2_5OmniForConditionalGeneration"


class Qwen25Omni(Family):
    name = "qwen2_5_omni"
    title = "Qwen2.5-Omni (thinker)"
    classes = (THINKER, FULL)
    aliases = ("Qwen2_5OmniModel",)  # what the released Qwen2.5-Omni-7B / 3B config.json files say
    modalities = ("video", "audio")

    def top(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.thinker if hasattr(model, "thinker") else model

    def layout(self, config: PretrainedConfig) -> Layout:
        return token_layout(config, video="video_token_id", audio="audio_token_id", image="image_token_id")

    def load(self, path: str, architecture: str, dtype: torch.dtype, attn: str) -> torch.nn.Module:
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        # The full model's checkpoint holds the thinker under `thinker.`: loading the thinker class alone
        # leaves the talker and vocoder weights (unused for text) on disk.
        return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=attn)

    def video_kwargs(self, frames: np.ndarray, fps: float, prompt: Prompt) -> dict[str, object]:
        return dict(
            fps=float(fps),
            do_sample_frames=False,
            cap_pixels_per_frame=True,  # qwen-vl-utils' per-frame cap, the reference behaviour
            size={"shortest_edge": prompt.min_pixels, "longest_edge": prompt.max_pixels},
        )

    def audio_kwargs(self, audio: np.ndarray) -> dict[str, object]:
        # interleaved per 2-s chunk with the audio we decoded ourselves
        return dict(audio=[audio], audio_from_video_indices=[0], load_audio_from_video=True)

    def forward_kwargs(self, audio_in_video: bool) -> dict[str, object]:
        return {"use_audio_in_video": audio_in_video}
