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
    `prompt_len` is the width of the prompt the 2-D attention mask starts with. Nothing is allocated or
    written until some layer needs a mask: a batch without padding or filler decodes with no FastAV kernel.
    """

    INITIAL_CAPACITY = 64  # generated columns before the buffer doubles

    def __init__(
        self, layers: dict[int, tuple[torch.Tensor, bool]], prompt_len: int, fmt: str, dtype: torch.dtype
    ) -> None:
        self.fmt, self.prompt_len, self._layers = fmt, prompt_len, layers
        self.widths = {layer: valid.shape[-1] for layer, (valid, _) in layers.items()}
        self.filler = {layer: filler for layer, (_, filler) in layers.items()}
        self.slot = {layer: k for k, layer in enumerate(layers)}
        self.prompt = max(self.widths.values())
        self._dtype = torch.bool if fmt != EAGER else dtype
        self._buffer: torch.Tensor | None = None
        self._written = 0  # decode columns in the buffer
        self._generated = 0  # decode columns so far (this step's included)
        self._attention_mask: torch.Tensor | None = None

    def step(self, attention_mask: torch.Tensor | None, total: int) -> None:
        """A decode step begins: the keys now span `total` columns (prompt + generated, this step's included)."""
        self._attention_mask, self._generated = attention_mask, total - self.prompt_len

    def get(self, layer: int, model_mask_is_none: bool) -> torch.Tensor | None:
        """The mask for `layer` at the current step. Where the model itself needed no mask (no padding anywhere)
        and this layer has no filler, none is needed (sdpa and flash); eager always takes one."""
        if model_mask_is_none and not self.filler[layer] and self.fmt != EAGER:
            return None
        if self._written < self._generated:
            self._write()
        start = self.prompt - self.widths[layer]
        keys = self._buffer[self.slot[layer], :, start : self.prompt + self._generated]
        return keys if self.fmt == FLASH else keys[:, None, None, :]

    def _encode(self, valid: torch.Tensor) -> torch.Tensor:
        return valid if self.fmt != EAGER else _additive(valid, self._dtype)

    def _write(self) -> None:
        """Bring the buffer up to the current step: the pending generated columns, for all layers at once."""
        if self._buffer is None or self._generated > self._buffer.shape[-1] - self.prompt:
            self._allocate(max(self._generated, self.INITIAL_CAPACITY, 2 * self._written))
        old, new = self.prompt_len + self._written, self.prompt_len + self._generated
        if self._attention_mask is None:
            columns = torch.ones((), dtype=torch.bool, device=self._buffer.device)
        else:
            columns = self._attention_mask[:, old:new].bool()
        self._buffer[:, :, self.prompt + self._written : self.prompt + self._generated] = self._encode(columns)
        self._written = self._generated

    def _allocate(self, capacity: int) -> None:
        first = next(iter(self._layers.values()))[0]
        shape = (len(self._layers), first.shape[0], self.prompt + capacity)
        buffer = torch.empty(shape, dtype=self._dtype, device=first.device)
        if self._buffer is not None:  # grow: keep what is written
            buffer[:, :, : self.prompt + self._written] = self._buffer[:, :, : self.prompt + self._written]
        else:  # prompt part, right-aligned per layer: the generated columns line up across layers
            for layer, (valid, _) in self._layers.items():
                row, offset = buffer[self.slot[layer]], self.prompt - valid.shape[-1]
                row[:, :offset] = self._encode(torch.zeros((), dtype=torch.bool, device=first.device))
                row[:, offset : self.prompt] = self._encode(valid)
        self._buffer = buffer
