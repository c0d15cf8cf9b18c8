"""Keep-set selection rules over a batch of rows, and compaction of the kept rows.

All functions take (B, n) tensors over the current token slots and return a (B, n) bool `drop` mask. Only
positions marked `prunable` (AV tokens of the chosen modalities, never the last token) are ever dropped.
Counts are per row, so rows of one batch keep different numbers of tokens.
"""

from __future__ import annotations

import torch

from fastav.plan import PruneStep


def drop_count(n: torch.Tensor, fraction: float) -> torch.Tensor:
    """How many of `n` tokens a fractional drop removes: floor(fraction * n), as in the FLOPs tables."""
    return torch.floor(n.double() * fraction).long()


def global_budget(prunable: torch.Tensor, positions: torch.Tensor, cut: int | None, keep_ratio: float) -> torch.Tensor:
    """AV tokens each row keeps at the global stage: those before `cut`, else round(keep_ratio * n_av)."""
    if cut is not None:
        return (prunable & (positions < cut)).sum(-1)
    return torch.round(prunable.sum(-1).double() * keep_ratio).long()


def keep_first(prunable: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Positional cut: keep the earliest `keep[b]` prunable tokens of row b."""
    return prunable & (prunable.long().cumsum(-1) > keep[:, None])


def keep_random(prunable: torch.Tensor, keep: torch.Tensor, seed: int) -> torch.Tensor:
    """Keep a random subset of `keep[b]` prunable tokens; depends only on the row, not on the batch."""
    drop = torch.zeros_like(prunable)
    for row in range(prunable.shape[0]):
        where = prunable[row].nonzero().squeeze(-1)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(where.numel(), generator=generator).to(where.device)
        drop[row, where[order[int(keep[row]) :]]] = True
    return drop


def drop_lowest(scores: torch.Tensor, prunable: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Drop the `count[b]` prunable tokens with the lowest score (ties: the earlier position goes first)."""
    masked = scores.float().masked_fill(~prunable, float("inf"))
    order = torch.argsort(masked, dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order)
    )
    return prunable & (rank < count[:, None])


def keep_top(scores: torch.Tensor, prunable: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep the `keep[b]` highest-scored prunable tokens (the drop-lowest-attention ablation)."""
    return drop_lowest(scores, prunable, prunable.sum(-1) - keep)


def compact(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather plan for the kept slots: (index (B, m), valid (B, m)) with m = max kept per row.

    Kept slots stay in their original order and are right-aligned, so the last token stays last; rows that
    keep fewer get leading filler slots (valid False) that the attention mask hides, like left padding.
    """
    width = int(keep.sum(-1).max())
    order = torch.argsort(keep.to(torch.int8), dim=-1, stable=True)[:, keep.shape[-1] - width :]
    return order, keep.gather(-1, order)


def select(
    step: PruneStep,
    prunable: torch.Tensor,
    positions: torch.Tensor,
    scores: torch.Tensor | None,
    cut: int | None,
    keep_ratio: float,
    seed: int,
) -> torch.Tensor:
    """The drop mask of one pruning step. `positions` count from each row's first non-pad token;
    `scores` are the previous layer's last-query attention (needed by score-based rules only)."""
    if step.rule == "drop_fraction":
        return drop_lowest(scores, prunable, drop_count(prunable.sum(-1), step.fraction))
    budget = global_budget(prunable, positions, cut, keep_ratio)
    if step.rule == "keep_first":
        return keep_first(prunable, budget)
    if step.rule == "random":
        return keep_random(prunable, budget, seed)
    return keep_top(scores, prunable, budget)
