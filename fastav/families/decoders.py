"""Plain text decoders (Qwen2, LLaMA): the backbones of VideoLLaMA2-AV and video-SALMONN2, which feed them
inputs_embeds. They have no token layout of their own: a preset (`fastav.presets`) or explicit labels say where
the audio-visual spans are. Subclasses (VideoLLaMA2-AV's own Qwen2ForCausalLM) inherit the support."""

from __future__ import annotations

from fastav.families.base import Family


class Qwen2Decoder(Family):
    name = "qwen2"
    title = "Qwen2 decoder (VideoLLaMA2-AV, video-SALMONN2 presets)"
    classes = ("Qwen2ForCausalLM",)
    text_path = "model"


class LlamaDecoder(Family):
    name = "llama"
    title = "LLaMA decoder"
    classes = ("LlamaForCausalLM",)
    text_path = "model"
