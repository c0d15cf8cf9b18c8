"""The model side of inference, free of Ray and object storage: load a Qwen2.5-Omni thinker with FastAV, batch
per-video inputs, generate, and turn FastAV's stats into output columns.

The Ray actor (`pipeline.infer`) wraps this for the pipeline; `benchmarks/gpu.py` runs it directly on a GPU
machine that has no Ray, so the benchmark measures the code the pipeline runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers.generation.streamers import BaseStreamer

import fastav
from fastav import FastAVConfig, varlen
from pipeline.config import ModelConfig

THINKER_ARCHITECTURES = {
    "Qwen2_5OmniThinkerForConditionalGeneration",
    "Qwen2_5OmniForConditionalGeneration",
    "Qwen2_5OmniModel",
}


@dataclass(frozen=True)
class Runtime:
    device: str
    dtype: torch.dtype
    attn: str  # the text decoder's attention backend
    encoder_attn: str  # the vision and audio towers'


def resolve_runtime(config: ModelConfig) -> Runtime:
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if config.dtype != "auto":
        dtype = getattr(torch, config.dtype)
    else:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    attn, encoder_attn = varlen.choose_backends(config.attn_implementation, device, dtype)
    return Runtime(device, dtype, attn, encoder_attn)


def load_model(path: str, config: ModelConfig):
    """The thinker on its device, in eval mode, with the resolved attention backends. Returns (model, runtime)."""
    from transformers import AutoConfig, Qwen2_5OmniThinkerForConditionalGeneration

    architectures = set(AutoConfig.from_pretrained(path).architectures or [])
    if not architectures & THINKER_ARCHITECTURES:
        raise fastav.UnsupportedModelError(
            f"model.checkpoint has architectures {sorted(architectures)}; the pipeline runs Qwen2.5-Omni "
            f"checkpoints ({', '.join(sorted(THINKER_ARCHITECTURES))})"
        )
    runtime = resolve_runtime(config)
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        path, dtype=runtime.dtype, attn_implementation=runtime.attn
    )
    return prepare(model, runtime), runtime


def prepare(model, runtime: Runtime):
    """Towers on their backend (set after loading: see fastav.varlen), the model on its device, eval mode."""
    if runtime.encoder_attn != runtime.attn:
        varlen.use_for_encoders(model, runtime.encoder_attn)
    return model.to(runtime.device).eval()


def collate(inputs: list[dict[str, np.ndarray]], pad_id: int, device: str, dtype: torch.dtype) -> dict:
    """One batch from per-video inputs (read-only views of the payloads: only ever copied from)."""
    width = max(len(x["input_ids"]) for x in inputs)
    ids = np.full((len(inputs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(inputs), width), dtype=np.int64)
    for i, x in enumerate(inputs):  # left padding: the last position is real in every row
        ids[i, width - len(x["input_ids"]) :] = x["input_ids"]
        mask[i, width - len(x["input_ids"]) :] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    for key in ("pixel_values_videos", "video_grid_thw", "video_second_per_grid"):
        batch[key] = np.concatenate([x[key] for x in inputs])
    if "input_features" in inputs[0]:
        # Features arrive trimmed to their valid frames: pad to the longest (the model reads masked frames only).
        frames = max(x["input_features"].shape[-1] for x in inputs)
        features = np.zeros((len(inputs), inputs[0]["input_features"].shape[0], frames), dtype=np.float32)
        feature_mask = np.zeros((len(inputs), frames), dtype=np.int64)
        for i, x in enumerate(inputs):
            features[i, :, : x["input_features"].shape[-1]] = x["input_features"]
            feature_mask[i, : x["feature_attention_mask"].shape[-1]] = x["feature_attention_mask"]
        batch["input_features"], batch["feature_attention_mask"] = features, feature_mask
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    for key in ("pixel_values_videos", "input_features"):
        if key in tensors:
            tensors[key] = tensors[key].to(dtype)
    return {k: v.to(device) for k, v in tensors.items()}


def stats_columns(stats: fastav.SampleStats) -> dict:
    av = ("video", "audio", "image")
    after_global = stats.after_global or stats.input_tokens
    return {
        "tokens_text": stats.input_tokens["text"],
        "tokens_video": stats.input_tokens["video"],
        "tokens_audio": stats.input_tokens["audio"],
        "tokens_image": stats.input_tokens["image"],
        "tokens_input": stats.tokens_per_layer[0],
        "av_tokens_after_global": sum(after_global[m] for m in av),
        "av_tokens_last_layer": stats.av_tokens_per_layer[-1],
        "tokens_last_layer": stats.tokens_per_layer[-1],
        "flops_unpruned": float(stats.flops_unpruned),
        "flops_pruned": float(stats.flops_pruned),
        "flops_ratio": float(stats.flops_ratio),
    }


class _FirstTokenTimer(BaseStreamer):
    """generate() calls put() with the prompt, then once per step: the second call ends the prefill."""

    def __init__(self) -> None:
        self.calls, self.start, self.first_token = 0, time.perf_counter(), None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first_token = time.perf_counter()

    def end(self) -> None:
        pass


class ModelRunner:
    """A loaded thinker with FastAV installed (strategy `none` is the unpruned baseline through the same code),
    its tokenizer, and batched greedy generation."""

    def __init__(self, model, tokenizer, fastav_config: FastAVConfig, max_new_tokens: int) -> None:
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.pruner = fastav.enable(model, fastav_config)

    @property
    def device(self) -> str:
        return str(self.model.device)

    def generate(self, inputs: list[dict[str, np.ndarray]], audio_in_video: bool) -> list[dict]:
        """One generate() call over the videos' inputs; per video its output text, times and FastAV columns."""
        batch = collate(inputs, self.tokenizer.pad_token_id, self.model.device, self.model.dtype)
        timer = _FirstTokenTimer()
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                use_audio_in_video=audio_in_video,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=timer,
            )
        done = time.perf_counter()
        texts = self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        prefill_ms = ((timer.first_token or done) - timer.start) * 1000.0
        return [
            {
                "output_text": text.strip(),
                "prefill_ms": prefill_ms,
                "generate_ms": (done - timer.start) * 1000.0,
                "batch_rows": len(inputs),
                **stats_columns(stats),
            }
            for text, stats in zip(texts, self.pruner.stats, strict=True)
        ]
