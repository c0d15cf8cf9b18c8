"""Tiny random-weight checkpoints and synthetic inputs for tests, demos and benchmarks.

Checkpoints are written with save_pretrained and loaded with from_pretrained, like real ones; nothing is
downloaded. Depends on torch and transformers only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniThinkerConfig

# A byte-level tokenizer: the 256 byte symbols, then Qwen2.5-Omni's special tokens at fixed ids.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
)
TOKEN_ID = {token: 256 + i for i, token in enumerate(SPECIAL_TOKENS)}
VOCAB = 272
OMNI_IDS = dict(
    image_token_index=TOKEN_ID["<|IMAGE|>"],
    video_token_index=TOKEN_ID["<|VIDEO|>"],
    audio_token_index=TOKEN_ID["<|AUDIO|>"],
    audio_start_token_id=TOKEN_ID["<|audio_bos|>"],
    audio_end_token_id=TOKEN_ID["<|audio_eos|>"],
    vision_start_token_id=TOKEN_ID["<|vision_bos|>"],
    vision_end_token_id=TOKEN_ID["<|vision_eos|>"],
)
# Tokens a plain decoder treats as AV in span/label tests.
VIDEO_ID, AUDIO_ID = OMNI_IDS["video_token_index"], OMNI_IDS["audio_token_index"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif c['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
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
    tie_word_embeddings=False,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def save_qwen2(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    Qwen2ForCausalLM(Qwen2Config(**_TEXT)).save_pretrained(path)
    return path


def save_llama(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**_TEXT)).save_pretrained(path)
    return path


def save_omni_thinker(
    path: Path, seed: int = 0, processor: bool = False, encoder_width: int = 16, full: bool = False
) -> Path:
    """Tiny thinker; with `processor`, also its tokenizer, chat template and processor configs (torchvision).
    `full` writes a full Qwen2_5OmniForConditionalGeneration (talker off) holding that thinker instead.

    `encoder_width` widens the towers (heads of 64 from 128 on, and a windowed vision block before the full
    one) for checks of real attention kernels, which want realistic head sizes.
    """
    torch.manual_seed(seed)
    heads = max(2, encoder_width // 64)
    windowed = encoder_width >= 128
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(
            num_mel_bins=128,
            encoder_layers=1,
            encoder_attention_heads=heads,
            encoder_ffn_dim=2 * encoder_width,
            d_model=encoder_width,
            output_dim=64,
            n_window=100,
            max_source_positions=1500,
        ),
        vision_config=dict(
            depth=2 if windowed else 1,
            hidden_size=encoder_width,
            intermediate_size=2 * encoder_width,
            num_heads=heads,
            out_hidden_size=64,
            fullatt_block_indexes=[1] if windowed else [0],
        ),
        text_config=dict(
            **{k: v for k, v in _TEXT.items() if k not in ("tie_word_embeddings", "pad_token_id", "eos_token_id")},
            pad_token_id=TOKEN_ID["<|endoftext|>"],
            eos_token_id=TOKEN_ID["<|im_end|>"],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        ),
        **OMNI_IDS,
    )
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    if full:
        from transformers import Qwen2_5OmniForConditionalGeneration
        from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniConfig

        torch.manual_seed(seed)
        model = Qwen2_5OmniForConditionalGeneration(
            Qwen2_5OmniConfig(thinker_config=config.to_dict(), enable_audio_output=False)
        )
    model.generation_config.eos_token_id = TOKEN_ID["<|im_end|>"]
    model.generation_config.pad_token_id = TOKEN_ID["<|endoftext|>"]
    model.save_pretrained(path)
    if processor:
        build_omni_processor().save_pretrained(path)
    return path


def byte_tokenizer(token_ids: dict[str, int], named: dict[str, str]):
    """A byte-level Qwen2 tokenizer: the 256 byte symbols, then `token_ids` (special tokens at fixed ids);
    `named` gives the processor-facing names (e.g. video_token) of some of them."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    vocab.update(token_ids)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens=named,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(token_ids)})
    assert all(tokenizer.convert_tokens_to_ids(t) == i for t, i in token_ids.items()), "special token ids moved"
    return tokenizer


def build_tokenizer():
    return byte_tokenizer(
        TOKEN_ID,
        {
            "image_token": "<|IMAGE|>",
            "audio_token": "<|AUDIO|>",
            "video_token": "<|VIDEO|>",
            "vision_bos_token": "<|vision_bos|>",
            "vision_eos_token": "<|vision_eos|>",
            "audio_bos_token": "<|audio_bos|>",
            "audio_eos_token": "<|audio_eos|>",
        },
    )


def build_omni_processor():
    """Qwen2.5-Omni processor over the byte-level tokenizer; small frames keep token counts low."""
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(),
        video_processor=Qwen2VLVideoProcessor(size={"shortest_edge": 4 * 28 * 28, "longest_edge": 64 * 28 * 28}),
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=build_tokenizer(),
        chat_template=CHAT_TEMPLATE,
    )


def load(path: Path, attn: str = "sdpa"):
    """A tiny checkpoint through its family's loader (the class its config.json names), fp32, eval mode."""
    from fastav.families import for_directory

    family, architecture = for_directory(path)
    return family.load(str(path), architecture, torch.float32, attn).eval()


def left_pad(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def text_av_rows(lengths: list[tuple[int, int, int, int]], seed: int = 0) -> list[list[int]]:
    """Rows of [prefix text][video][audio][question] with random text ids; lengths per row."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for prefix, video, audio, question in lengths:
        text = lambda n: torch.randint(3, 200, (n,), generator=g).tolist()  # noqa: E731
        rows.append(text(prefix) + [VIDEO_ID] * video + [AUDIO_ID] * audio + text(question))
    return rows


def omni_inputs(
    specs: list[tuple[int, int, int, int]], seed: int = 0, grid: tuple[int, int] = (4, 4), ids: dict | None = None
) -> dict[str, torch.Tensor]:
    """Batch of audio-in-video inputs for the tiny thinker, laid out as the Omni processor does.

    spec per row: (prefix text tokens, video temporal patches (even), audio mel frames, question tokens).
    Each temporal patch is a `grid` of 14-px patches (merged 2x2 into tokens) and lasts 1 s, so one 2-s chunk
    holds 2 temporal patches of video tokens, then up to 50 audio tokens (25/s). `ids`: the placeholder
    token ids (default: the tiny checkpoints'; OMNI_IDS names the keys).
    """
    g = torch.Generator().manual_seed(seed)
    ids = ids or OMNI_IDS
    height, width = grid
    per_patch = height * width // 4
    rows, grids, audio_lens = [], [], []
    for prefix, t, frames, question in specs:
        n_audio = ((frames - 1) // 2 + 1 - 2) // 2 + 1
        video_chunks = [2 * per_patch] * (t // 2)
        audio_chunks = [min(50, n_audio - 50 * j) for j in range((n_audio + 49) // 50)]
        body = [ids["vision_start_token_id"], ids["audio_start_token_id"]]
        for j in range(max(len(video_chunks), len(audio_chunks))):
            if j < len(video_chunks):
                body += [ids["video_token_index"]] * video_chunks[j]
            if j < len(audio_chunks):
                body += [ids["audio_token_index"]] * audio_chunks[j]
        body += [ids["audio_end_token_id"], ids["vision_end_token_id"]]
        text = lambda n: torch.randint(3, 200, (n,), generator=g).tolist()  # noqa: E731
        rows.append(text(prefix) + body + text(question))
        grids.append([t, height, width])
        audio_lens.append(frames)
    input_ids, attention_mask = left_pad(rows)
    max_frames = max(audio_lens)
    features = torch.randn(len(specs), 128, max_frames, generator=g)
    feature_mask = torch.tensor([[1] * f + [0] * (max_frames - f) for f in audio_lens])
    n_patches = sum(t * height * width for t, _, _ in grids)
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        input_features=features,
        feature_attention_mask=feature_mask,
        pixel_values_videos=torch.randn(n_patches, 3 * 2 * 14 * 14, generator=g),
        video_grid_thw=torch.tensor(grids),
        video_second_per_grid=torch.ones(len(specs)),
        use_audio_in_video=True,
    )


class TinyPrompt:
    """Prompt settings for the tiny processors (the pipeline's PromptConfig has the same fields)."""

    system = "You are a helpful assistant."
    user = "What happens in this video?"
    min_pixels = 4 * 32 * 32
    max_pixels = 16 * 32 * 32


def processed_batch(path: Path, specs: list[tuple[int, int, float | None, str]], seed: int = 0) -> dict:
    """A left-padded batch built the way the pipeline builds one: random frames (and audio) through the
    checkpoint's own processor and its family's `processor_inputs`, then `collate`.

    spec per row: (frames, frame side in pixels, audio seconds or None, user prompt).
    """
    import numpy as np
    from transformers import AutoProcessor

    from fastav.families import for_directory
    from fastav.families.base import collate

    family, _ = for_directory(path)
    processor = AutoProcessor.from_pretrained(path)
    rng = np.random.default_rng(seed)
    rows, audio_flags = [], []
    for frames, side, seconds, user in specs:
        video = rng.integers(0, 256, (frames, side, side, 3), dtype=np.uint8)
        audio = None
        if seconds is not None and family.takes_audio():
            audio = (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32)
        rows.append(family.processor_inputs(processor, video, 2.0, audio, TinyPrompt(), user))
        audio_flags.append(audio is not None)
    if len(set(audio_flags)) > 1:
        raise ValueError("a batch is either all audio-in-video or all video-only (one flag per forward)")
    batch = collate(rows, processor.tokenizer.pad_token_id, "cpu", torch.float32)
    batch.update(family.forward_kwargs(audio_flags[0]))
    return batch
