"""Inference: a callable class for an actor pool; loads the checkpoint once per actor, runs batched generate().

FastAV is always installed (strategy `none` gives the unpruned baseline through the same code path), so
every success row carries the same statistics columns. Rows are grouped by whether audio is interleaved
(`use_audio_in_video` is one flag per generate call); a group that fails is retried row by row so one bad
input cannot take its batch down.
"""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import torch
from transformers.generation.streamers import BaseStreamer

import fastav
from fastav import FastAVConfig
from pipeline.checkpoint import local_checkpoint
from pipeline.config import InferConfig, ModelConfig, StorageConfig
from pipeline.preprocess import load_processor
from pipeline.rows import OK, fail, to_batch, to_rows, unpack
from pipeline.stages import node_id
from pipeline.storage import Storage

THINKER_ARCHITECTURES = {
    "Qwen2_5OmniThinkerForConditionalGeneration",
    "Qwen2_5OmniForConditionalGeneration",
    "Qwen2_5OmniModel",
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


def resolve_runtime(config: ModelConfig) -> tuple[str, torch.dtype, str]:
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if config.dtype != "auto":
        dtype = getattr(torch, config.dtype)
    else:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    attn = config.attn_implementation
    if attn == "auto":
        attn = "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"
    return device, dtype, attn


def load_model(path: str, config: ModelConfig):
    from transformers import AutoConfig, Qwen2_5OmniThinkerForConditionalGeneration

    architectures = set(AutoConfig.from_pretrained(path).architectures or [])
    if not architectures & THINKER_ARCHITECTURES:
        raise fastav.UnsupportedModelError(
            f"model.checkpoint has architectures {sorted(architectures)}; the pipeline runs Qwen2.5-Omni "
            f"checkpoints ({', '.join(sorted(THINKER_ARCHITECTURES))})"
        )
    device, dtype, attn = resolve_runtime(config)
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=attn)
    return model.to(device).eval(), device


def _collate(inputs: list[dict[str, np.ndarray]], pad_id: int, device: str, dtype: torch.dtype) -> dict:
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


class InferActor:
    """One per actor: model, processor (for decoding text) and FastAV pruner are set up once."""

    def __init__(self, model: ModelConfig, infer: InferConfig, fastav_config: FastAVConfig, storage: StorageConfig):
        path = str(local_checkpoint(model, Storage(storage)))
        self.infer = infer
        self.model, self.device = load_model(path, model)
        self.tokenizer = load_processor(path).tokenizer
        self.pruner = fastav.enable(self.model, fastav_config)
        self.model_id = model.checkpoint
        self.settings = json.dumps(fastav_config.summary(), sort_keys=True)

    def _generate(self, rows: list[dict], audio_in_video: bool) -> None:
        inputs = [unpack(row["inputs"]) for row in rows]
        batch = _collate(inputs, self.tokenizer.pad_token_id, self.device, self.model.dtype)
        timer = _FirstTokenTimer()
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                use_audio_in_video=audio_in_video,
                max_new_tokens=self.infer.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=timer,
            )
        done = time.perf_counter()
        texts = self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for row, text, stats in zip(rows, texts, self.pruner.stats, strict=True):
            row["output_text"] = text.strip()
            row["prefill_ms"] = ((timer.first_token or done) - timer.start) * 1000.0
            row["generate_ms"] = (done - timer.start) * 1000.0
            row["batch_rows"] = len(rows)
            row.update(stats_columns(stats))

    def __call__(self, batch: dict) -> dict:
        rows = to_rows(batch)
        node = node_id()
        for row in rows:
            row["model_id"], row["fastav_settings"], row["infer_node"] = self.model_id, self.settings, node
        for flag in (True, False):
            group = [r for r in rows if r.get("status") == OK and bool(r.get("use_audio_in_video")) == flag]
            if not group:
                continue
            try:
                self._generate(group, flag)
            except Exception:
                for row in group:  # isolate the failing input
                    try:
                        self._generate([row], flag)
                    except Exception as error:
                        fail(row, error)
        for row in rows:
            row.pop("inputs", None)
        return to_batch(rows)
