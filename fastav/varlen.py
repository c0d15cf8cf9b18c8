"""Encoder attention on PyTorch's own variable-length flash kernel, without the flash-attn package.

Qwen2.5-Omni's vision and audio towers pack every clip (and every vision window) into one sequence with
`cu_seqlens` boundaries. With sdpa, transformers splits that sequence on the host and runs attention chunk by
chunk in Python (thousands of small calls at real frame rates: the vision tower took 2.1 s of a 2.8 s
prefill at 60 frames x 4 clips on an H200). Any backend whose registered name contains "flash" gets the
packed call instead, so `varlen_attention` is registered under such a name and runs
`torch.nn.attention.varlen.varlen_attn` (flash / cuDNN kernels shipped with PyTorch, CUDA, fp16/bf16) on
the whole packed sequence. Elsewhere (CPU, fp32, an older PyTorch) it runs the same per-chunk sdpa path as
transformers, so outputs match sdpa's.

The towers get the backend by setting their configs' `_attn_implementation` after loading (as the pruner
does for the text model): `from_pretrained(attn_implementation=...)` would try to import a flash-attn
kernel for any name containing "flash".
"""

from __future__ import annotations

import functools
import importlib.util
import inspect

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

NAME = "torch_varlen_flash"  # "flash" in the name selects transformers' packed (cu_seqlens) path


@functools.cache
def _kernel():
    """`varlen_attn` and whether it takes `scale` (it did not in its first releases), or None without it."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn, "scale" in inspect.signature(varlen_attn).parameters


def kernel_available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the packed kernel runs for tensors of this device and dtype (else the per-chunk path runs)."""
    return torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16) and _kernel() is not None


def _per_chunk(query, key, value, cu_seqlens: torch.Tensor, scaling: float) -> torch.Tensor:
    """What transformers does for non-flash backends: split on the host, one sdpa call per chunk."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    chunks = [
        torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scaling)
        for q, k, v in zip(*(t.split(lengths, dim=2) for t in (query, key, value)), strict=True)
    ]
    return torch.cat(chunks, dim=2)


def varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Bidirectional attention over packed sequences. query/key/value (1, H, total, D) as the towers pass them;
    returns (1, total, H, D) like transformers' flash backends."""
    if cu_seq_lens_q is None or attention_mask is not None or is_causal:
        raise ValueError(
            f"attention backend {NAME!r} serves packed encoder attention (cu_seqlens, no mask, not causal), as in "
            "Qwen2.5-Omni's vision and audio towers; use sdpa or flash_attention_2 for decoders"
        )
    if dropout and module.training:
        raise ValueError(f"attention backend {NAME!r} is for inference: no dropout")
    cu_seq_lens_k = cu_seq_lens_q if cu_seq_lens_k is None else cu_seq_lens_k
    head_dim = query.shape[-1]
    scaling = head_dim**-0.5 if scaling is None else scaling
    if not kernel_available(query.device, query.dtype) or query.shape[0] != 1:
        out = _per_chunk(query, key, value, cu_seq_lens_q, scaling)
        return out.transpose(1, 2).contiguous(), None
    varlen_attn, takes_scale = _kernel()
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (total, H, D)
    extra = {"scale": scaling} if takes_scale else {}
    if not takes_scale and scaling != head_dim**-0.5:
        q = q * (scaling * head_dim**0.5)  # the kernel's default scale is 1/sqrt(D)
    if max_length_q is None:
        max_length_q = int((cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).max())
    if max_length_k is None:
        max_length_k = int((cu_seq_lens_k[1:] - cu_seq_lens_k[:-1]).max())
    out = varlen_attn(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        cu_seq_lens_q.to(torch.int32),
        cu_seq_lens_k.to(torch.int32),
        max_length_q,
        max_length_k,
        **extra,
    )
    return out.unsqueeze(0), None


def register() -> None:
    """Idempotent: register the backend (and, for completeness, flash's 2-D mask builder under its name)."""
    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, varlen_attention)
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["flash_attention_2"])


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def choose_backends(requested: str, device: str, dtype: torch.dtype) -> tuple[str, str]:
    """(decoder backend, encoder-tower backend) for a requested `attn_implementation`.

    `auto`: flash-attn everywhere if installed; else sdpa for the decoder and, on CUDA in fp16/bf16, this
    module's varlen backend for the towers; else sdpa. `varlen`: sdpa decoder, varlen towers. Any other
    name is used for both.
    """
    if requested == "auto":
        if device == "cuda" and flash_attn_installed():
            return "flash_attention_2", "flash_attention_2"
        return "sdpa", (NAME if kernel_available(device, dtype) else "sdpa")
    if requested == "varlen":
        return "sdpa", NAME
    return requested, requested


ENCODER_TOWERS = ("visual", "audio_tower")  # where Qwen2.5-Omni (and Qwen2-VL-style models) keep them


def encoder_configs(model: torch.nn.Module) -> list:
    """The configs of the model's vision and audio towers (empty for models without them)."""
    return [m.config for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in ENCODER_TOWERS]


def use_for_encoders(model: torch.nn.Module, backend: str = NAME) -> int:
    """Run the model's encoder towers on `backend` (this module's by default). Returns how many towers."""
    if backend == NAME:
        register()
    configs = encoder_configs(model)
    for config in configs:
        config._attn_implementation = backend
    return len(configs)
