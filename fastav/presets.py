"""Presets: a model's decoder dimensions, its audio-visual token layout and the paper's settings for it.

A preset serves two purposes: `fastav.enable(model, preset=...)` takes its layout and config, and
`fastav flops --preset ...` computes the FLOPs table for its typical input. Layout counts that the paper
does not state are assumptions, written next to the preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fastav.config import FastAVConfig
from fastav.flops import ModelDims
from fastav.layout import Layout, Modality, SpanLayout, TokenIdLayout

QWEN2_7B = ModelDims(num_layers=28, hidden=3584, heads=28, kv_heads=4, head_dim=128, ffn=18944)
QWEN2_5_3B = ModelDims(num_layers=36, hidden=2048, heads=16, kv_heads=2, head_dim=128, ffn=11008)
# Qwen3-Omni-30B-A3B's thinker and Qwen3-VL-30B-A3B share this MoE decoder: every layer routes to 8 of 128 experts.
QWEN3_30B_A3B = ModelDims(
    num_layers=48, hidden=2048, heads=32, kv_heads=4, head_dim=128, ffn=6144,
    experts=128, experts_per_token=8, expert_ffn=768,
)  # fmt: skip
QWEN3_8B = ModelDims(num_layers=36, hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=12288)
QWEN3_DEEPSTACK = 3  # deepstack_visual_indexes [8, 16, 24]: visual features are added after text layers 0, 1, 2

T, V, A = Modality.TEXT, Modality.VIDEO, Modality.AUDIO
Segments = tuple[tuple[Modality, int], ...]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    dims: ModelDims
    segments: Segments  # the typical input, in order, for FLOPs tables
    config: FastAVConfig
    layout: Layout | None  # None: token ids come from the model config (native transformers models)
    assumptions: tuple[str, ...] = field(default=())
    min_prune_layer: int = 1  # deepstack models: the number of deepstack layers

    def labels(self) -> torch.Tensor:
        """(1, n) Modality labels of the typical input."""
        return torch.tensor([[int(m) for m, count in self.segments for _ in range(count)]])


def spans_of(segments: Segments) -> SpanLayout:
    spans, start = [], 0
    for modality, count in segments:
        if modality != T:
            spans.append((modality, start, start + count))
        start += count
    return SpanLayout(tuple(spans))


def _interleaved(prefix: int, chunks: int, video: int, audio: int, suffix: int) -> Segments:
    return ((T, prefix), *((V, video), (A, audio)) * chunks, (T, suffix))


_VL2 = ((T, 14), (V, 676), (A, 1496), (T, 30))
_SALMONN = _interleaved(prefix=14, chunks=16, video=196, audio=32, suffix=30)
_OMNI = _interleaved(prefix=20, chunks=15, video=72, audio=50, suffix=30)
_OMNI_IDS = TokenIdLayout(video_ids=frozenset({151656}), audio_ids=frozenset({151646}), image_ids=frozenset({151655}))
# 8 frames of 448x256 with 16-px patches: 4 temporal grids (2 frames each) of 28x16 patches, merged 2x2 -> 112 tokens
_QWEN3_GRID = 112
# Qwen3-Omni: 30 s of audio at 12.5 tokens/s = 375, interleaved with the 4 grids by time (7.5 s each, ~94 tokens)
_QWEN3_OMNI = (
    (T, 22), *((V, _QWEN3_GRID), (A, 94)) * 3, (V, _QWEN3_GRID), (A, 93), (T, 32)
)  # fmt: skip
# Qwen3-VL: each temporal grid behind its own text timestamp "<3.8 seconds>" and its vision start/end tokens
_QWEN3_VL = ((T, 20), *((T, 8), (V, _QWEN3_GRID), (T, 1)) * 4, (T, 30))
# Qwen2.5-VL: 14-px patches, 8 frames of 448x252 -> 4 grids of 32x18 patches, merged 2x2 -> 144 tokens each, one span
_QWEN2_5_VL = ((T, 21), (V, 4 * 144), (T, 31))
_VL_IDS = TokenIdLayout(video_ids=frozenset({151656}), image_ids=frozenset({151655}))
_QWEN3_OMNI_IDS = TokenIdLayout(
    video_ids=frozenset({151656}), audio_ids=frozenset({151675}), image_ids=frozenset({151655})
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="videollama2-av",
            description="VideoLLaMA2-AV (Qwen2-7B decoder fed inputs_embeds), the paper's main setting",
            dims=QWEN2_7B,
            segments=_VL2,
            config=FastAVConfig(global_layer=14, global_cut=750, fine_ratio=0.2),
            layout=spans_of(_VL2),
            assumptions=(
                "layout [0,14) system, [14,690) 676 video, [690,2186) 1,496 audio, then a 30-token question",
                "cut 750 keeps all 676 video and the first 60 audio tokens (the paper's range is 700-750)",
            ),
        ),
        Preset(
            name="video-salmonn2",
            description="video-SALMONN2 (LLaVA-OneVision-Qwen2-7B decoder), audio and video interleaved per frame",
            dims=QWEN2_7B,
            segments=_SALMONN,
            config=FastAVConfig(global_layer=14, global_keep_ratio=1 / 3, fine_ratio=0.2),
            layout=spans_of(_SALMONN),
            assumptions=(
                "16 frames, each 196 video tokens followed by 32 audio tokens of the same time window",
                "14 system tokens before the first frame, a 30-token question after the last",
                "keep ratio 1/3: the positional cut keeps the first ~5 frames with their audio",
            ),
        ),
        Preset(
            name="qwen2.5-omni-7b",
            description="Qwen2.5-Omni-7B thinker, audio-in-video interleaved per 2-s chunk (TMRoPE)",
            dims=QWEN2_7B,
            segments=_OMNI,
            config=FastAVConfig(global_keep_ratio=1 / 3, fine_ratio=0.2),
            layout=_OMNI_IDS,
            assumptions=(
                "30-s clip, 15 chunks of 2 s: 72 video tokens (2 frames at 336x168 -> 12x6 merged patches) "
                "then 50 audio tokens (25/s)",
                "20 system/prompt tokens before the clip, 30 question tokens after it",
                "the paper reports no Omni numbers: global layer L/2, keep 1/3, P=0.2 carried over",
            ),
        ),
        Preset(
            name="qwen2.5-omni-3b",
            description="Qwen2.5-Omni-3B thinker, audio-in-video interleaved per 2-s chunk (TMRoPE)",
            dims=QWEN2_5_3B,
            segments=_OMNI,
            config=FastAVConfig(global_keep_ratio=1 / 3, fine_ratio=0.2),
            layout=_OMNI_IDS,
            assumptions=(
                "same input as qwen2.5-omni-7b; 36 layers, hidden 2048, 16 heads / 2 KV heads, FFN 11008",
                "the paper reports no Omni numbers: global layer L/2, keep 1/3, P=0.2 carried over",
            ),
        ),
        Preset(
            name="qwen3-omni-30b-a3b",
            description="Qwen3-Omni-30B-A3B thinker (MoE, deepstack), audio-in-video interleaved per temporal grid",
            dims=QWEN3_30B_A3B,
            segments=_QWEN3_OMNI,
            config=FastAVConfig(global_keep_ratio=1 / 3, fine_ratio=0.2),
            layout=_QWEN3_OMNI_IDS,
            min_prune_layer=QWEN3_DEEPSTACK,
            assumptions=(
                "8 frames at 448x256 (16-px patches, 2 frames per temporal grid): 4 grids of 112 video tokens",
                "30 s of audio at 12.5 tokens/s (375), interleaved with the grids by time: ~94 after each grid",
                "22 prompt tokens before the clip, 32 after it; MoE FLOPs count 8 active experts of 768 + router",
                "deepstack adds visual features after text layers 0-2: pruning starts at layer 3 at the earliest",
            ),
        ),
        Preset(
            name="qwen3-vl-8b",
            description="Qwen3-VL-8B (dense, deepstack), video only: one span per temporal grid behind a timestamp",
            dims=QWEN3_8B,
            segments=_QWEN3_VL,
            config=FastAVConfig(global_keep_ratio=1 / 3, fine_ratio=0.2),
            layout=_VL_IDS,
            min_prune_layer=QWEN3_DEEPSTACK,
            assumptions=(
                "8 frames at 448x256: 4 temporal grids of 112 video tokens, each behind ~8 timestamp/vision tokens",
                "20 system/prompt tokens before the clip, 30 after it; the audio track is not used (video-only model)",
                "deepstack adds visual features after text layers 0-2: pruning starts at layer 3 at the earliest",
            ),
        ),
        Preset(
            name="qwen3-vl-30b-a3b",
            description="Qwen3-VL-30B-A3B (MoE, deepstack), video only",
            dims=QWEN3_30B_A3B,
            segments=_QWEN3_VL,
            config=FastAVConfig(global_keep_ratio=1 / 3, fine_ratio=0.2),
            layout=_VL_IDS,
            min_prune_layer=QWEN3_DEEPSTACK,
            assumptions=(
                "same input as qwen3-vl-8b; the Qwen3-Omni thinker's MoE decoder (48 layers, 8 of 128 experts)",
            ),
        ),
        Preset(
            name="qwen2.5-vl-7b",
            description="Qwen2.5-VL-7B, video only: all frames in one span",
            dims=QWEN2_7B,
            segments=_QWEN2_5_VL,
            config=FastAVConfig(global_keep_ratio=1 / 3, fine_ratio=0.2),
            layout=_VL_IDS,
            assumptions=(
                "8 frames at 448x252 (14-px patches): 4 temporal grids of 144 video tokens in one span",
                "21 system/prompt tokens before the clip, 31 after it; the audio track is not used",
            ),
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
