"""Tiny random-weight Qwen3-VL (dense, MoE) and Qwen2.5-VL checkpoints with their processors, for tests and demos.

Built from the families' real config classes, scaled down: 6 text layers of hidden 64 (4 query / 2 KV heads of
16), `mrope_section` summing to head_dim / 2, and a vision tower of a few blocks; Qwen3-VL with 2 deepstack
layers, so its first prunable layer is 2. The tokenizer is byte-level with the real special-token names at
fixed ids. Saved with save_pretrained, loaded with from_pretrained; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastav.testing import byte_tokenizer, left_pad

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
TOKEN_ID = {token: 256 + i for i, token in enumerate(SPECIAL_TOKENS)}
VOCAB = 272
IDS = dict(
    image_token_id=TOKEN_ID["<|image_pad|>"],
    video_token_id=TOKEN_ID["<|video_pad|>"],
    vision_start_token_id=TOKEN_ID["<|vision_start|>"],
    vision_end_token_id=TOKEN_ID["<|vision_end|>"],
)
# The real checkpoints' markup for a media item; the processor expands the inner pad token (Qwen3-VL: into one
# "<t seconds><|vision_start|>pads<|vision_end|>" per temporal grid, inside this wrapper).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    pad_token_id=TOKEN_ID["<|endoftext|>"],
)
_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[])
_QWEN3_VISION = dict(
    depth=3,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,  # head size 16: the axial 2-D rope wants a multiple of 4
    patch_size=16,
    temporal_patch_size=2,
    spatial_merge_size=2,
    out_hidden_size=64,
    num_position_embeddings=256,  # a square grid
    deepstack_visual_indexes=[0, 1],  # 2 deepstack layers: features added after text layers 0 and 1
)
DEEPSTACK_LAYERS = len(_QWEN3_VISION["deepstack_visual_indexes"])


def _finish(model, path: Path, processor) -> Path:
    model.generation_config.eos_token_id = TOKEN_ID["<|im_end|>"]
    model.generation_config.pad_token_id = TOKEN_ID["<|endoftext|>"]
    model.generation_config.bos_token_id = None
    model.save_pretrained(path)
    if processor is not None:
        processor.save_pretrained(path)
    return path


def save_qwen3_vl(path: Path, seed: int = 0, moe: bool = False, processor: bool = False) -> Path:
    from transformers import (
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
    )

    torch.manual_seed(seed)
    text = dict(
        **_TEXT,
        head_dim=16,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                         "mrope_interleaved": True},
    )  # fmt: skip
    if moe:
        config = Qwen3VLMoeConfig(
            text_config={**text, **_MOE}, vision_config=_QWEN3_VISION, tie_word_embeddings=False, **IDS
        )
        model = Qwen3VLMoeForConditionalGeneration(config)
    else:
        model = Qwen3VLForConditionalGeneration(
            Qwen3VLConfig(text_config=text, vision_config=_QWEN3_VISION, tie_word_embeddings=False, **IDS)
        )
    return _finish(model, path, build_qwen3_vl_processor() if processor else None)


def save_qwen2_5_vl(path: Path, seed: int = 0, processor: bool = False) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            **_TEXT,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            eos_token_id=TOKEN_ID["<|im_end|>"],
            bos_token_id=None,  # the class default (151643) lies outside the tiny vocabulary
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=56,  # 2x2 merged tokens per window: block 0 really is windowed
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        tie_word_embeddings=False,
        **IDS,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    return _finish(model, path, build_qwen2_5_vl_processor() if processor else None)


def _tokenizer():
    return byte_tokenizer(
        TOKEN_ID,
        {
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )


def build_qwen3_vl_processor():
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    half = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3, patch_size=16, temporal_patch_size=2, merge_size=2)
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64}, **half),
        video_processor=Qwen3VLVideoProcessor(
            size={"shortest_edge": 32 * 32, "longest_edge": 8 * 64 * 64}, do_sample_frames=False, **half
        ),
        tokenizer=_tokenizer(),
        chat_template=CHAT_TEMPLATE,
    )


def build_qwen2_5_vl_processor():
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    small = {"shortest_edge": 4 * 28 * 28, "longest_edge": 16 * 28 * 28}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=small),
        video_processor=Qwen2VLVideoProcessor(size=small),
        tokenizer=_tokenizer(),
        chat_template=CHAT_TEMPLATE,
    )


def vl_inputs(
    specs: list[tuple[int, int, int]], family: str, seed: int = 0, grid: tuple[int, int] = (4, 4)
) -> dict[str, torch.Tensor]:
    """A left-padded batch laid out as the family's processor lays out one video per row.

    spec per row: (prefix text tokens, temporal grids, question tokens). Each temporal grid is `grid` patches
    (merged 2x2 into tokens). Qwen3-VL: one "<t seconds>" text timestamp + vision span per grid, inside the
    chat template's outer vision start/end; Qwen2.5-VL: one span with every grid.
    """
    g = torch.Generator().manual_seed(seed)
    height, width = grid
    per_grid = height * width // 4
    start, end, pad = IDS["vision_start_token_id"], IDS["vision_end_token_id"], IDS["video_token_id"]
    text = lambda n: torch.randint(3, 200, (n,), generator=g).tolist()  # noqa: E731
    rows, grids, seconds = [], [], []
    for prefix, t, question in specs:
        if family == "qwen3_vl":
            body = [start]
            for j in range(t):
                body += [*f"<{j + 0.5:.1f} seconds>".encode(), start, *[pad] * per_grid, end]
            body.append(end)
        else:
            body = [start, *[pad] * (per_grid * t), end]
        rows.append(text(prefix) + body + text(question))
        grids.append([t, height, width])
        seconds.append(1.0)
    input_ids, attention_mask = left_pad(rows, pad=TOKEN_ID["<|endoftext|>"])
    types = (input_ids == pad).long() * 2
    n_patches = sum(t * height * width for t, _, _ in grids)
    patch = 3 * 2 * (16 if family == "qwen3_vl" else 14) ** 2
    out = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        mm_token_type_ids=types,
        pixel_values_videos=torch.randn(n_patches, patch, generator=g),
        video_grid_thw=torch.tensor(grids),
    )
    if family == "qwen2_5_vl":
        out["second_per_grid_ts"] = torch.tensor(seconds)
    return out
