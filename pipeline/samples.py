"""Inputs for the quality tools (`fastav calibrate`, `fastav rollout`): a loaded model and a few prompts.

Two sources:
  - a job config: its model, and the first videos of its source through the job's own decode and prompt
    settings and the checkpoint's processor, exactly what the pipeline would feed the model;
  - a text decoder (Qwen2, LLaMA; any class FastAV supports) and a JSON file of token ids with the spans to
    treat as prunable: [{"name": "...", "input_ids": [...], "spans": [[start, end, "video"], ...]}, ...].
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

import fastav
from fastav.layout import Modality, SpanLayout
from pipeline.config import ModelConfig, PipelineConfig

log = logging.getLogger(__name__)


@dataclass
class Sample:
    name: str
    prompt: dict[str, object]  # forward / generate kwargs for one row
    labels: torch.Tensor | None  # (1, n) Modality labels where the model has no layout of its own


def job_samples(config: PipelineConfig, count: int) -> tuple[object, list[Sample]]:
    """The job's model and its first `count` videos that decode (a video that does not is skipped, logged)."""
    from fastav.families.base import collate
    from pipeline.checkpoint import local_checkpoint
    from pipeline.decode import decode_video
    from pipeline.preprocess import load_processor, video_inputs
    from pipeline.runner import load_model
    from pipeline.source import list_videos
    from pipeline.storage import Storage

    storage = Storage(config.storage)
    path = str(local_checkpoint(config.model, storage))
    model, _ = load_model(path, config.model)
    processor = load_processor(path)
    family = fastav.family_of(model)
    samples = []
    for video in list_videos(config.source, storage):
        if len(samples) == count:
            break
        try:
            decoded = decode_video(storage.read(video["uri"]), config.decode)
        except Exception as error:
            log.warning("skipping %s: %s", video["uri"], error)
            continue
        inputs = video_inputs(
            family, processor, decoded.frames, decoded.sample_fps, decoded.audio, config.prompt, video.get("prompt")
        )
        prompt = collate([inputs], processor.tokenizer.pad_token_id, model.device, model.dtype)
        prompt.update(family.forward_kwargs("input_features" in inputs))
        samples.append(Sample(video["uri"], prompt, None))
    if not samples:
        raise ValueError(f"source.uri {config.source.uri}: no video could be decoded")
    return model, samples


def token_samples(
    checkpoint: str, tokens: Path, model_config: ModelConfig | None = None
) -> tuple[object, list[Sample]]:
    """A text decoder from `checkpoint` (from_pretrained) and the prompts of a token file (format above)."""
    from transformers import AutoModelForCausalLM

    from pipeline.runner import resolve_runtime

    runtime = resolve_runtime(model_config or ModelConfig(checkpoint=checkpoint))
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=runtime.dtype, attn_implementation="sdpa")
    fastav.resolve(model)  # an unsupported model is refused here, not after loading the inputs
    return model.to(runtime.device).eval(), read_token_file(tokens, model.device)


def read_token_file(path: Path, device: torch.device | str = "cpu") -> list[Sample]:
    entries = json.loads(Path(path).read_text())
    entries = entries if isinstance(entries, list) else [entries]
    samples = []
    for index, entry in enumerate(entries):
        where = f"{path} entry {index}"
        try:
            ids = torch.tensor([entry["input_ids"]], dtype=torch.long, device=device)
            spans = tuple((Modality[m.upper()], int(start), int(end)) for start, end, m in entry["spans"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f'{where}: expected {{"input_ids": [...], "spans": [[start, end, "video"], ...]}} ({error!r})'
            ) from None
        if not spans or any(end > ids.shape[1] for _, _, end in spans):
            raise ValueError(f"{where}: spans must be non-empty and lie within the {ids.shape[1]} input ids")
        mask = torch.ones_like(ids)
        labels = SpanLayout(spans).labels(ids, mask)
        samples.append(Sample(str(entry.get("name", index)), {"input_ids": ids, "attention_mask": mask}, labels))
    return samples
