"""The varlen encoder-attention backend: wiring into Qwen2.5-Omni's towers, packing, backend choice.

The kernel itself is CUDA-only (tests/fastav/test_gpu.py checks it against sdpa); here the towers run the
backend's per-chunk path, and a CPU stand-in for the kernel checks the packed layout it is handed.
"""

from __future__ import annotations

import pytest
import torch

import fastav
from fastav import FastAVConfig, varlen
from fastav import testing as tiny
from tests.fastav.test_equivalence import omni_inputs


def _tower_outputs(model, inputs):
    with torch.no_grad():
        video = torch.cat(
            model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
        )
        audio = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).last_hidden_state
        logits = model(**inputs).logits[:, -1]
    return video, audio, logits


class _Spy:
    """Counts calls of the registered backend and the packed boundaries it was given."""

    def __init__(self, monkeypatch) -> None:
        self.calls = []
        stock = varlen.varlen_attention

        def spy(module, query, key, value, attention_mask, **kwargs):
            self.calls.append((type(module).__name__, kwargs["cu_seq_lens_q"].tolist()))
            return stock(module, query, key, value, attention_mask, **kwargs)

        monkeypatch.setattr(varlen, "varlen_attention", spy)
        monkeypatch.delitem(varlen.AttentionInterface._global_mapping, varlen.NAME, raising=False)


def test_towers_on_the_backend_match_sdpa(checkpoints, monkeypatch):
    inputs = omni_inputs(3)
    model = tiny.load(checkpoints["omni"], "sdpa")
    want = _tower_outputs(model, inputs)
    spy = _Spy(monkeypatch)
    assert varlen.use_for_encoders(model) == 2
    got = _tower_outputs(model, inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=0)
    # Both towers went through the backend with packed boundaries: in the vision tower one sequence per
    # temporal patch (4 + 2 + 6 of 4x4 patches).
    names = {name for name, _ in spy.calls}
    assert names == {"Qwen2_5OmniVisionAttention", "Qwen2_5OmniAudioAttention"}
    vision = next(cu for name, cu in spy.calls if name == "Qwen2_5OmniVisionAttention")
    assert vision == list(range(0, 12 * 16 + 1, 16))
    # The text decoder is untouched, and FastAV runs on top.
    assert model.model.language_model.config._attn_implementation == "sdpa"
    pruner = fastav.enable(model, FastAVConfig(global_layer=2))
    _tower_outputs(model, inputs)
    assert all(s.tokens_per_layer[-1] < s.tokens_per_layer[0] for s in pruner.stats)


def _reference_varlen(scale_param: bool):
    """A CPU stand-in with varlen_attn's contract: (total, H, D) tensors, cu_seqlens, max lengths."""

    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, scale=None):
        assert q.ndim == 3 and cu_q.dtype == torch.int32 and isinstance(max_q, int)
        assert max_q == int((cu_q[1:] - cu_q[:-1]).max())
        out = torch.empty_like(q)
        for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
            chunk = [t[start:end].transpose(0, 1) for t in (q, k, v)]
            out[start:end] = torch.nn.functional.scaled_dot_product_attention(*chunk, scale=scale).transpose(0, 1)
        return out

    if scale_param:
        return kernel
    return lambda q, k, v, cu_q, cu_k, max_q, max_k: kernel(q, k, v, cu_q, cu_k, max_q, max_k)


@pytest.mark.parametrize("takes_scale", [True, False])
def test_packed_path_hands_the_kernel_the_packed_layout(checkpoints, monkeypatch, takes_scale):
    inputs = omni_inputs(3)
    model = tiny.load(checkpoints["omni"], "sdpa")
    want = _tower_outputs(model, inputs)
    monkeypatch.setattr(varlen, "_kernel", lambda: (_reference_varlen(takes_scale), takes_scale))
    monkeypatch.setattr(varlen, "kernel_available", lambda device, dtype: True)
    varlen.use_for_encoders(model)
    got = _tower_outputs(model, inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


def test_the_backend_refuses_decoder_attention():
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="packed encoder attention"):
        varlen.varlen_attention(torch.nn.Module(), q, q, q, None)


def test_backend_choice(monkeypatch):
    monkeypatch.setattr(varlen, "flash_attn_installed", lambda: False)
    assert varlen.choose_backends("auto", "cpu", torch.float32) == ("sdpa", "sdpa")
    assert varlen.choose_backends("auto", "cuda", torch.float32) == ("sdpa", "sdpa")  # the kernel is fp16/bf16
    assert varlen.choose_backends("auto", "cuda", torch.bfloat16) == ("sdpa", varlen.NAME)
    assert varlen.choose_backends("varlen", "cpu", torch.float32) == ("sdpa", varlen.NAME)
    assert varlen.choose_backends("eager", "cuda", torch.bfloat16) == ("eager", "eager")
    monkeypatch.setattr(varlen, "flash_attn_installed", lambda: True)
    assert varlen.choose_backends("auto", "cuda", torch.bfloat16) == ("flash_attention_2", "flash_attention_2")
    assert varlen.choose_backends("auto", "cpu", torch.float32) == ("sdpa", "sdpa")
