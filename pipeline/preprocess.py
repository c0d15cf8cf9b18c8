"""Preprocess: the model's own processor turns decoded frames + audio + prompt into model inputs.

The processor is loaded from the checkpoint (`AutoProcessor.from_pretrained`), once per worker process.
With an audio track the Qwen2.5-Omni processor interleaves video and audio tokens per 2-s chunk
(`load_audio_from_video=True` with the audio we decoded ourselves); without one the video goes alone.
"""

from __future__ import annotations

import functools

import numpy as np

from pipeline.config import PromptConfig


@functools.lru_cache(maxsize=2)
def load_processor(path: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)


def conversation(system: str, user: str) -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user}]},
    ]


def processor_outputs(
    processor,
    frames: np.ndarray,
    sample_fps: float,
    audio: np.ndarray | None,
    prompt: PromptConfig,
    user: str | None = None,
    return_tensors: str = "np",
):
    """The processor's own outputs for one video (what a user of transformers would feed the model)."""
    text = processor.apply_chat_template(
        conversation(prompt.system, user or prompt.user), tokenize=False, add_generation_prompt=True
    )
    kwargs = dict(
        text=[text],
        videos=[frames],
        fps=float(sample_fps),
        do_sample_frames=False,
        cap_pixels_per_frame=True,  # qwen-vl-utils' per-frame cap, the reference behaviour
        size={"shortest_edge": prompt.min_pixels, "longest_edge": prompt.max_pixels},
        return_tensors=return_tensors,
    )
    if audio is not None:
        kwargs.update(audio=[audio], audio_from_video_indices=[0], load_audio_from_video=True)
    return processor(**kwargs)


def model_inputs(out) -> dict[str, np.ndarray]:
    """Per-video model inputs from `processor_outputs(...)` (numpy): batch dimension removed where it is
    per-sample, audio padding dropped."""
    inputs = {
        "input_ids": out["input_ids"][0].astype(np.int64),
        "pixel_values_videos": out["pixel_values_videos"].astype(np.float32, copy=False),
        "video_grid_thw": out["video_grid_thw"].astype(np.int64),
        "video_second_per_grid": np.asarray(out["video_second_per_grid"], dtype=np.float32),
    }
    if "input_features" in out:
        # The processor pads audio features to 30 s; the model reads only the masked (valid, leading) frames,
        # so the padding is dropped here instead of travelling to the model actor.
        mask = out["feature_attention_mask"][0]
        valid = int(mask.sum())
        valid = valid if mask[:valid].all() else mask.size  # only a leading run of valid frames is trimmed
        inputs["input_features"] = out["input_features"][0, :, :valid].astype(np.float32, copy=False)
        inputs["feature_attention_mask"] = mask[:valid].astype(np.int64, copy=False)
    return inputs
