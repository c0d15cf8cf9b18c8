"""Keep-set selection rules over a batch of rows, and compaction of the kept rows.

How many tokens each row drops is decided on the host (`fastav.tokens` knows every row's counts); these
functions only choose *which*, on the device, and never read a device value back: a host read stalls the
GPU queue, and a handful per layer costs more than pruning saves. Rules take (B, n) tensors over the
current token slots and return a (B, n) bool `drop` mask; only `prunable` slots are ever dropped.
"""

from __future__ import annotations

import math

import torch


def drop_count(n: int, fraction: float) -> int:
    """How many of `n` tokens a fractional drop removes: floor(fraction * n), as in the FLOPs tables."""
    return math.floor(n * fraction)


def global_keep(n_prunable: int, before_cut: int | None, keep_ratio: float) -> int:
    """AV tokens a row keeps at the global stage: those before the cut, else round(keep_ratio * n)."""
    return before_cut if before_cut is not None else round(n_prunable * keep_ratio)


def upload(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without waiting for the device: a plain copy from pageable memory
    synchronizes the CUDA stream, a copy from pinned memory is queued like a kernel."""
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def to_device(values: list[int], device: torch.device) -> torch.Tensor:
    """Host counts as a (B,) tensor on `device` (queued, see `upload`)."""
    return upload(torch.tensor(values, dtype=torch.long), device)


def keep_first(prunable: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Positional cut: keep the earliest `keep[b]` prunable tokens of row b."""
    return prunable & (prunable.long().cumsum(-1) > keep[:, None])


def keep_random(prunable: torch.Tensor, keep: list[int], n_prunable: list[int], seed: int) -> torch.Tensor:
    """Keep a seeded random subset of `keep[b]` of row b's `n_prunable[b]` prunable tokens.

    The subset depends only on the row (a fresh generator per row), not on the batch or the device: the
    permutation is drawn on the host, where the row's count is already known, and its survivors travel as a
    (B, max n) table indexed by each prunable token's rank.
    """
    width = max(max(n_prunable, default=0), 1)
    survive = torch.zeros(prunable.shape[0], width, dtype=torch.bool)
    for row, (n, k) in enumerate(zip(n_prunable, keep, strict=True)):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        survive[row, order[:k]] = True
    survive = upload(survive, prunable.device)
    rank = (prunable.long().cumsum(-1) - 1).clamp_(0, width - 1)
    return prunable & ~survive.gather(-1, rank)


def drop_lowest(scores: torch.Tensor, prunable: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Drop the `count[b]` prunable tokens with the lowest score (ties: the earlier position goes first)."""
    masked = scores.float().masked_fill(~prunable, float("inf"))
    order = torch.argsort(masked, dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order)
    )
    return prunable & (rank < count[:, None])


def compact(keep: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather plan for the kept slots: (index (B, width), valid (B, width)); `width` is the most any row keeps.

    Kept slots stay in their original order and are right-aligned, so the last token stays last; rows that
    keep fewer get leading filler slots (valid False) that the attention mask hides, like left padding.
    """
    order = torch.argsort(keep.to(torch.int8), dim=-1, stable=True)[:, keep.shape[-1] - width :]
    return order, keep.gather(-1, order)
