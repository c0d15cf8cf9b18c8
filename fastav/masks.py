"""Attention masks for the layers after the first prune, built from what the host already knows.

Each pruned layer attends over its own key set, so it needs its own mask. transformers' `create_causal_mask`
would build it, but it reads the padding mask back to the host to decide whether a mask is needed at all
(one GPU stall per call) and costs Python time; called per layer per decode step it made decoding slower
than no pruning. Here:
  - prefill: a layer's mask is the causal triangle (one per prefill, sliced) and its slot validity, and no
    mask at all where the host counts say no row has filler slots and no padding remains;
  - decode: every pruned layer's key validity lives in one buffer, built when the prefill ends, with the
    prompt part right-aligned so that the generated columns sit at the same place for all layers; a decode
    step writes its new columns once (one copy for all layers), and each layer gets a view.

Formats follow the backend whose attention runs: sdpa takes a (B, 1, q, kv) bool mask (True attends), eager
an additive float mask, flash-attention the 2-D (B, kv) key mask it unpads with.
"""

from __future__ import annotations

import torch

SDPA, EAGER, FLASH = "sdpa", "eager", "flash"


def mask_format(backend: str) -> str:
    if "flash" in backend:  # transformers sends every backend whose name contains "flash" down its varlen path
        return FLASH
    return EAGER if backend == "eager" else SDPA


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


class PrefillMasks:
    """Masks of one prefill's pruned layers; the causal triangle is built once, at the first pruned width."""

    def __init__(self, fmt: str, dtype: torch.dtype) -> None:
        self.fmt, self.dtype = fmt, dtype
        self._causal: torch.Tensor | None = None

    def build(self, valid: torch.Tensor, filler: bool) -> torch.Tensor | None:
        """Mask over (B, m) slots, right-aligned with leading filler where `filler` says so."""
        width = valid.shape[-1]
        if self.fmt == FLASH:
            return valid if filler else None
        if self.fmt == SDPA and not filler:
            return None  # sdpa's is_causal path (flash / cuDNN kernels)
        if self._causal is None or self._causal.shape[-1] < width:
            self._causal = torch.ones(width, width, dtype=torch.bool, device=valid.device).tril_()
        mask = self._causal[:width, :width][None, None] & valid[:, None, None, :]
        return mask if self.fmt == SDPA else _additive(mask, self.dtype)


class DecodeMasks:
    """Key masks of the pruned layers during decoding: one buffer, one write per step, a view per layer.

    `layers` maps each pruned layer to its prompt slot validity (B, m_layer) and whether it has filler;
    `prompt_len` is the width of the prompt the 2-D attention mask starts with.
    """

    INITIAL_CAPACITY = 64  # generated columns before the buffer doubles

    def __init__(
        self, layers: dict[int, tuple[torch.Tensor, bool]], prompt_len: int, fmt: str, dtype: torch.dtype
    ) -> None:
        self.fmt, self.prompt_len = fmt, prompt_len
        self.widths = {layer: valid.shape[-1] for layer, (valid, _) in layers.items()}
        self.filler = {layer: filler for layer, (_, filler) in layers.items()}
        self.slot = {layer: k for k, layer in enumerate(layers)}
        self.prompt = max(self.widths.values())
        first = next(iter(layers.values()))[0]
        self._dtype = torch.bool if fmt != EAGER else dtype
        batch, self._capacity = first.shape[0], self.INITIAL_CAPACITY
        self._buffer = torch.empty(
            len(layers), batch, self.prompt + self._capacity, dtype=self._dtype, device=first.device
        )
        for layer, (valid, _) in layers.items():
            row = self._buffer[self.slot[layer]]
            offset = self.prompt - valid.shape[-1]
            row[:, :offset] = self._encode(torch.zeros((), dtype=torch.bool, device=first.device))
            row[:, offset : self.prompt] = self._encode(valid)
        self.generated = 0  # decode columns written so far

    def _encode(self, valid: torch.Tensor) -> torch.Tensor:
        return valid if self.fmt != EAGER else _additive(valid, self._dtype)

    def step(self, attention_mask: torch.Tensor | None, total: int) -> None:
        """Record the key validity of the columns up to `total` (prompt + generated so far, this step's too)."""
        new = total - self.prompt_len
        if new > self._capacity:
            self._grow(max(new, 2 * self._capacity))
        if attention_mask is None:
            columns = torch.ones((), dtype=torch.bool, device=self._buffer.device)
        else:
            columns = attention_mask[:, self.prompt_len + self.generated : total].bool()
        self._buffer[:, :, self.prompt + self.generated : self.prompt + new] = self._encode(columns)
        self.generated = new

    def _grow(self, capacity: int) -> None:
        grown = torch.empty(
            *self._buffer.shape[:2], self.prompt + capacity, dtype=self._dtype, device=self._buffer.device
        )
        grown[:, :, : self._buffer.shape[-1]] = self._buffer
        self._buffer, self._capacity = grown, capacity

    def get(self, layer: int, model_mask_is_none: bool) -> torch.Tensor | None:
        """The mask for `layer` at the current step. Where the model itself needed no mask (no padding anywhere)
        and this layer has no filler, none is needed (sdpa and flash); eager always takes one."""
        if model_mask_is_none and not self.filler[layer] and self.fmt != EAGER:
            return None
        start = self.prompt - self.widths[layer]
        keys = self._buffer[self.slot[layer], :, start : self.prompt + self.generated]
        return keys if self.fmt == FLASH else keys[:, None, None, :]
