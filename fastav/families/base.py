"""A model family: everything FastAV and the pipeline need to know about one kind of checkpoint.

A family names the transformers classes it accepts, where the text decoder lives, the audio/video token layout
(read from the loaded config), the first layer that may be pruned, and, for the pipeline, which modalities it
takes and how its processor turns one decoded video into model inputs. Adding a family is one module that
subclasses `Family`, plus its entry in `fastav.families.FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol

import numpy as np
import torch
from transformers import PretrainedConfig

from fastav.adapter import Adapter, check_model
from fastav.flops import ModelDims
from fastav.layout import Layout, TokenIdLayout


class Prompt(Protocol):
    """The prompt settings a family's processor call needs (the pipeline's PromptConfig has them)."""

    system: str
    user: str
    min_pixels: int
    max_pixels: int


# Processor outputs with one entry per sequence position: left-padded when rows are batched.
SEQUENCE_KEYS = {"input_ids": None, "mm_token_type_ids": 0}  # key -> pad value (None: the tokenizer's pad id)
AUDIO_KEYS = ("input_features", "feature_attention_mask")
FLOAT_KEYS = ("pixel_values_videos", "pixel_values", "input_features")


class Family:
    name: ClassVar[str]
    title: ClassVar[str]  # for tables and messages
    classes: ClassVar[tuple[str, ...]]  # transformers classes (top modules) this family accepts
    aliases: ClassVar[tuple[str, ...]] = ()  # other `architectures` names its checkpoints carry (no such class)
    text_path: ClassVar[str] = "model.language_model"  # from the top module to the text model
    modalities: ClassVar[tuple[str, ...]] = ()  # what the pipeline feeds it: ("video", "audio"), ("video",), ()

    # ------------------------------------------------------------------------------------ the library side
    def top(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module whose forward/generate runs the pruned decoder (a full Omni model: its thinker)."""
        return model

    def layout(self, config: PretrainedConfig) -> Layout | None:
        """The token layout from the loaded (top) config; None: the caller gives spans or labels."""
        return None

    def min_prune_layer(self, config: PretrainedConfig) -> int:
        """The first layer tokens may be dropped before. Never 0 (generation reads layer 0's cache length);
        for a deepstack model, the number of text layers that receive deepstack features."""
        return max(1, deepstack_layers(config))

    def min_prune_reason(self, config: PretrainedConfig) -> str:
        """Why layers before `min_prune_layer` are not prunable (for error messages)."""
        k = deepstack_layers(config)
        return f"deepstack adds visual features after text layers 0..{k - 1}" if k else ""

    def adapter(self, model: torch.nn.Module) -> Adapter:
        top = self.top(model)
        text_model = top.get_submodule(self.text_path) if self.text_path else top
        check_model(type(model).__name__, text_model.config)
        return Adapter(
            family=self.name,
            top=top,
            text_model=text_model,
            text_config=text_model.config,
            default_layout=self.layout(top.config),
            min_prune_layer=self.min_prune_layer(top.config),
            min_prune_reason=self.min_prune_reason(top.config),
            dims=ModelDims.from_config(text_model.config),
        )

    # ----------------------------------------------------------------------------------- the pipeline side
    def load(self, path: str, architecture: str, dtype: torch.dtype, attn: str) -> torch.nn.Module:
        """The model a checkpoint of `architecture` holds, as the top module FastAV prunes."""
        import transformers

        cls = getattr(transformers, architecture)
        return cls.from_pretrained(path, dtype=dtype, attn_implementation=attn)

    def video_kwargs(self, frames: np.ndarray, fps: float, prompt: Prompt) -> dict[str, object]:
        """The processor arguments for one video of already sampled frames at `fps` (no resampling)."""
        raise NotImplementedError(f"{self.title} takes no video: the pipeline cannot feed it")

    def audio_kwargs(self, audio: np.ndarray) -> dict[str, object]:
        """The processor arguments for the video's own audio track (families that take audio)."""
        raise NotImplementedError(f"{self.title} takes no audio")

    def processor_outputs(
        self,
        processor,
        frames: np.ndarray,
        fps: float,
        audio: np.ndarray | None,
        prompt: Prompt,
        user: str | None = None,
        return_tensors: str = "np",
    ):
        """The processor's own outputs for one video: what a transformers user would feed the model."""
        text = processor.apply_chat_template(
            conversation(prompt.system, user or prompt.user), tokenize=False, add_generation_prompt=True
        )
        kwargs = self.video_kwargs(frames, fps, prompt)
        if audio is not None:
            kwargs.update(self.audio_kwargs(audio))
        return processor(text=[text], videos=[frames], return_tensors=return_tensors, **kwargs)

    def processor_inputs(
        self,
        processor,
        frames: np.ndarray,
        fps: float,
        audio: np.ndarray | None,
        prompt: Prompt,
        user: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Model inputs for one decoded video (numpy, batch dimension removed where per-sample)."""
        return per_video(self.processor_outputs(processor, frames, fps, audio, prompt, user))

    def forward_kwargs(self, audio_in_video: bool) -> dict[str, object]:
        """Extra forward/generate arguments for a batch (e.g. the Omni models' use_audio_in_video)."""
        return {}

    def takes_audio(self) -> bool:
        return "audio" in self.modalities


def deepstack_layers(config: PretrainedConfig) -> int:
    """How many text layers receive deepstack features (the vision tower's `deepstack_visual_indexes`, Qwen3
    families): the model adds them through a mask over the full-length sequence, so they come before pruning."""
    vision = getattr(config, "vision_config", None)
    return len(getattr(vision, "deepstack_visual_indexes", None) or ())


def token_layout(config: PretrainedConfig, video: str, audio: str | None, image: str) -> TokenIdLayout:
    """A TokenIdLayout from the placeholder ids a loaded config names (attribute names differ per family)."""

    def ids(attribute: str | None) -> frozenset[int]:
        value = getattr(config, attribute, None) if attribute else None
        return frozenset() if value is None else frozenset({int(value)})

    return TokenIdLayout(video_ids=ids(video), audio_ids=ids(audio), image_ids=ids(image))


def conversation(system: str, user: str) -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": user}]},
    ]


def per_video(out: Mapping) -> dict[str, np.ndarray]:
    """Processor outputs (numpy, batch of one) -> per-video inputs: sequence keys lose the batch axis, the
    attention mask goes (collate rebuilds it), audio features are trimmed to their valid frames."""
    inputs: dict[str, np.ndarray] = {}
    for key, value in out.items():
        if key == "attention_mask" or value is None:
            continue
        value = np.asarray(value)
        if key in SEQUENCE_KEYS:
            value = value[0].astype(np.int64)
        elif key in FLOAT_KEYS or value.dtype == np.float64:
            value = value.astype(np.float32, copy=False)
        inputs[key] = value
    if "input_features" in inputs:
        # The processor pads audio features to 30 s; the model reads only the masked (valid, leading) frames,
        # so the padding is dropped here instead of travelling to the model actor.
        mask = inputs["feature_attention_mask"][0]
        valid = int(mask.sum())
        valid = valid if mask[:valid].all() else mask.size  # only a leading run of valid frames is trimmed
        inputs["input_features"] = inputs["input_features"][0, :, :valid]
        inputs["feature_attention_mask"] = mask[:valid].astype(np.int64, copy=False)
    return inputs


def collate(inputs: list[Mapping[str, np.ndarray]], pad_id: int, device, dtype: torch.dtype) -> dict:
    """One left-padded batch from per-video inputs (read-only views of the payloads: only ever copied from)."""
    width = max(len(x["input_ids"]) for x in inputs)
    batch: dict[str, np.ndarray] = {"attention_mask": np.zeros((len(inputs), width), dtype=np.int64)}
    for key, pad in SEQUENCE_KEYS.items():
        if key not in inputs[0]:
            continue
        batch[key] = np.full((len(inputs), width), pad_id if pad is None else pad, dtype=np.int64)
        for i, x in enumerate(inputs):  # left padding: the last position is real in every row
            batch[key][i, width - len(x[key]) :] = x[key]
    for i, x in enumerate(inputs):
        batch["attention_mask"][i, width - len(x["input_ids"]) :] = 1
    if "input_features" in inputs[0]:
        frames = max(x["input_features"].shape[-1] for x in inputs)
        features = np.zeros((len(inputs), inputs[0]["input_features"].shape[0], frames), dtype=np.float32)
        feature_mask = np.zeros((len(inputs), frames), dtype=np.int64)
        for i, x in enumerate(inputs):
            features[i, :, : x["input_features"].shape[-1]] = x["input_features"]
            feature_mask[i, : x["feature_attention_mask"].shape[-1]] = x["feature_attention_mask"]
        batch["input_features"], batch["feature_attention_mask"] = features, feature_mask
    for key in inputs[0]:
        if key not in batch:  # per-video arrays (pixels, grids, seconds per grid): concatenated
            batch[key] = np.concatenate([x[key] for x in inputs])
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    for key in FLOAT_KEYS:
        if key in tensors:
            tensors[key] = tensors[key].to(dtype)
    return {k: v.to(device) for k, v in tensors.items()}
