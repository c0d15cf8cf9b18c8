"""Scaled (or real-dimension) random-weight models of each family, and their typical prompts, for the prefill
benchmarks (`benchmarks/prefill.py --family`, `benchmarks/gpu.py --family`).

The text decoder is the family's own (MoE for Qwen3-Omni, deepstack-bearing Qwen3-VL, ...) at the given
dimensions, with tiny towers: the benchmark feeds placeholder ids without pixels or audio, so it times the
decoder prefill the pruner changes, with the family's token layout (from its preset, repeated to a length).
"""

from __future__ import annotations

import torch

from fastav.layout import Modality
from fastav.presets import get_preset

PRESET = {"qwen3_omni": "qwen3-omni-30b-a3b", "qwen3_vl": "qwen3-vl-8b", "qwen2_5_vl": "qwen2.5-vl-7b",
          "qwen2_5_omni": "qwen2.5-omni-7b"}  # fmt: skip
FAMILIES = tuple(PRESET)


def scaled_dims(family: str, layers: int, hidden: int) -> dict:
    """The family's text dimensions scaled to `hidden` (its FFN / expert ratios kept; heads of 64)."""
    dims = get_preset(PRESET[family]).dims
    heads = hidden // 64
    out = dict(layers=layers, hidden=hidden, heads=heads, kv_heads=max(1, heads * dims.kv_heads // dims.heads))
    if dims.is_moe:  # 16 experts, 4 active: the real active width over hidden (8 x 768 / 2048 = 3)
        active = dims.experts_per_token * dims.expert_ffn / dims.hidden
        out.update(experts=16, experts_per_token=4, expert_ffn=int(hidden * active / 4))
    else:
        out["ffn"] = int(hidden * dims.ffn / dims.hidden)
    return out


def real_dims(family: str) -> dict:
    d = get_preset(PRESET[family]).dims
    out = dict(layers=d.num_layers, hidden=d.hidden, heads=d.heads, kv_heads=d.kv_heads)
    if d.is_moe:
        out.update(experts=d.experts, experts_per_token=d.experts_per_token, expert_ffn=d.expert_ffn)
    else:
        out["ffn"] = d.ffn
    return out


def _text(dims: dict, family: str) -> dict:
    head_dim = dims["hidden"] // dims["heads"]
    # the real sections (Qwen3 [24, 20, 20], Qwen2.5 [16, 24, 24] at head_dim 128) scaled to sum to head_dim / 2
    half = head_dim // 2
    spatial = half * 20 // 64 if family.startswith("qwen3") else (half - half * 16 // 64) // 2
    section = [half - 2 * spatial, spatial, spatial]
    text = dict(
        vocab_size=1024,
        hidden_size=dims["hidden"],
        num_hidden_layers=dims["layers"],
        num_attention_heads=dims["heads"],
        num_key_value_heads=dims["kv_heads"],
        head_dim=head_dim,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": section},
        intermediate_size=dims.get("ffn", 4 * dims["hidden"]),
    )
    if "experts" in dims:
        text.update(
            num_experts=dims["experts"],
            num_experts_per_tok=dims["experts_per_token"],
            moe_intermediate_size=dims["expert_ffn"],
            decoder_sparse_step=1,
            mlp_only_layers=[],
        )
    return text


IDS = dict(video_token_id=1000, image_token_id=1001, audio_token_id=1002, vision_start_token_id=1003,
           vision_end_token_id=1004, audio_start_token_id=1005, audio_end_token_id=1006)  # fmt: skip


def build(family: str, dims: dict, attn: str, dtype: torch.dtype, device: str, seed: int = 0):
    """A random-weight model of `family` with the given text dimensions (tiny towers), on `device`."""
    import transformers

    torch.manual_seed(seed)
    text = _text(dims, family)
    tiny_vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=dims["hidden"])
    if family == "qwen3_omni":
        from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeThinkerConfig

        config = Qwen3OmniMoeThinkerConfig(
            text_config=text,
            vision_config={**tiny_vision, "num_position_embeddings": 256, "deepstack_visual_indexes": [0]},
            audio_config=dict(encoder_layers=1, d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64,
                              output_dim=dims["hidden"], downsample_hidden_size=8),
            position_id_per_seconds=13, **IDS,
        )  # fmt: skip
        cls = transformers.Qwen3OmniMoeThinkerForConditionalGeneration
    elif family == "qwen3_vl":
        ids = {k: v for k, v in IDS.items() if "audio" not in k}
        vision = {**tiny_vision, "num_position_embeddings": 256, "deepstack_visual_indexes": [0]}
        config = transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
        cls = transformers.Qwen3VLForConditionalGeneration
    elif family == "qwen2_5_vl":
        ids = {k: v for k, v in IDS.items() if "audio" not in k}
        config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=tiny_vision, **ids)
        cls = transformers.Qwen2_5_VLForConditionalGeneration
    elif family == "qwen2_5_omni":
        from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniThinkerConfig

        ids = {k.replace("_token_id", "_token_index") if k in ("video_token_id", "image_token_id", "audio_token_id")
               else k: v for k, v in IDS.items()}  # fmt: skip
        config = Qwen2_5OmniThinkerConfig(
            text_config=text,
            vision_config={**tiny_vision, "fullatt_block_indexes": [0]},
            audio_config=dict(encoder_layers=1, d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64,
                              output_dim=dims["hidden"]),
            **ids,
        )  # fmt: skip
        cls = transformers.Qwen2_5OmniThinkerForConditionalGeneration
    else:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    config._attn_implementation = attn
    for sub in ("text_config", "vision_config", "audio_config"):
        if getattr(config, sub, None) is not None:
            getattr(config, sub)._attn_implementation = attn
    return cls(config).to(device, dtype).eval()


def prompt(family: str, min_tokens: int, device: str, seed: int = 0) -> tuple[dict, int]:
    """Placeholder ids in the family's preset layout, the AV body repeated until the prompt has `min_tokens`.
    Returns (forward kwargs, length)."""
    segments = get_preset(PRESET[family]).segments
    head, body, tail = segments[0], segments[1:-1], segments[-1]
    per_body = sum(n for _, n in body)
    repeats = max(1, -(-(min_tokens - head[1] - tail[1]) // per_body))
    layout = [head, *body * repeats, tail]
    g = torch.Generator().manual_seed(seed)
    code = {Modality.VIDEO: IDS["video_token_id"], Modality.AUDIO: IDS["audio_token_id"]}
    ids = []
    for modality, count in layout:
        ids += [code[modality]] * count if modality in code else torch.randint(1, 900, (count,), generator=g).tolist()
    input_ids = torch.tensor([ids], device=device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}, len(ids)
