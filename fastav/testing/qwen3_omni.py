"""A tiny random-weight Qwen3-Omni thinker (MoE, deepstack) with its processor, for tests and demos.

Scaled down from the real config classes: 6 text layers of hidden 64 (4 query / 2 KV heads of 16), 4 experts
with 2 active, a 2-block vision tower with 2 deepstack layers (first prunable layer 2), a 1-layer audio
encoder. Every placeholder id is set explicitly (the thinker config has no vision_start_token_id unless given,
and real checkpoints use other ids than the class defaults); `position_id_per_seconds` is the checkpoints' 13.
`save_qwen3_omni(full=True)` writes a full Qwen3OmniMoeForConditionalGeneration (talker off) instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastav.testing import byte_tokenizer

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_pad|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
TOKEN_ID = {token: 256 + i for i, token in enumerate(SPECIAL_TOKENS)}
VOCAB = 272
IDS = dict(
    audio_token_id=TOKEN_ID["<|audio_pad|>"],
    image_token_id=TOKEN_ID["<|image_pad|>"],
    video_token_id=TOKEN_ID["<|video_pad|>"],
    audio_start_token_id=TOKEN_ID["<|audio_start|>"],
    audio_end_token_id=TOKEN_ID["<|audio_end|>"],
    vision_start_token_id=TOKEN_ID["<|vision_start|>"],
    vision_end_token_id=TOKEN_ID["<|vision_end|>"],
)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEEPSTACK_LAYERS = 2


def thinker_config(encoder_width: int = 32):
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeThinkerConfig

    return Qwen3OmniMoeThinkerConfig(
        audio_config=dict(
            num_mel_bins=128,
            encoder_layers=1,
            encoder_attention_heads=2,
            encoder_ffn_dim=2 * encoder_width,
            d_model=encoder_width,
            downsample_hidden_size=8,
            output_dim=64,
            n_window=50,  # the processor sizes audio placeholders with its own n_window of 50
            n_window_infer=800,
            max_source_positions=1500,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=encoder_width,
            intermediate_size=2 * encoder_width,
            num_heads=2,  # head size divisible by 4 (axial 2-D rope)
            out_hidden_size=64,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=256,  # a square grid
            deepstack_visual_indexes=list(range(DEEPSTACK_LAYERS)),
        ),
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=6,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            moe_intermediate_size=32,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            max_position_embeddings=4096,
            pad_token_id=TOKEN_ID["<|endoftext|>"],
            eos_token_id=TOKEN_ID["<|im_end|>"],
            # interleaved M-RoPE: H takes frequencies 1,4,..., W 2,5,..., T the rest; [4, 2, 2] fits head_dim 16
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [4, 2, 2],
                "interleaved": True,
                "mrope_interleaved": True,
            },
        ),
        position_id_per_seconds=13,
        seconds_per_chunk=2,
        user_token_id=TOKEN_ID["<|im_start|>"],
        **IDS,
    )


def save_qwen3_omni(path: Path, seed: int = 0, processor: bool = False, full: bool = False) -> Path:
    from transformers import Qwen3OmniMoeForConditionalGeneration, Qwen3OmniMoeThinkerForConditionalGeneration
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeConfig

    torch.manual_seed(seed)
    if full:
        model = Qwen3OmniMoeForConditionalGeneration(
            Qwen3OmniMoeConfig(thinker_config=thinker_config(), enable_audio_output=False)
        )
    else:
        model = Qwen3OmniMoeThinkerForConditionalGeneration(thinker_config())
    model.generation_config.eos_token_id = TOKEN_ID["<|im_end|>"]
    model.generation_config.pad_token_id = TOKEN_ID["<|endoftext|>"]
    model.save_pretrained(path)
    if processor:
        build_processor().save_pretrained(path)
    return path


def build_processor():
    """Qwen3-Omni processor over a byte-level tokenizer with the real special-token names; small frames."""
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import Qwen3OmniMoeProcessor

    vision = dict(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    tokenizer = byte_tokenizer(
        TOKEN_ID,
        {
            "image_token": "<|image_pad|>",
            "audio_token": "<|audio_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
    )
    return Qwen3OmniMoeProcessor(
        image_processor=Qwen2VLImageProcessor(**vision),
        video_processor=Qwen2VLVideoProcessor(size={"shortest_edge": 4 * 32 * 32, "longest_edge": 16 * 32 * 32},
                                              **vision),
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )  # fmt: skip
