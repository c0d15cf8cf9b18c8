"""TokenSet: which original tokens each row still carries, and how a pruning step shrinks it.

Shared by the pruner (on real hidden states) and by the FLOPs schedule of presets (on labels alone), so
the counts the CLI prints are the counts the model runs with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastav import selection
from fastav.config import FastAVConfig
from fastav.layout import Modality, count_modalities, pad_offsets, prunable_mask
from fastav.plan import Plan, PruneStep


@dataclass
class TokenSet:
    labels: torch.Tensor  # (B, n) original Modality labels, PAD where masked
    offsets: torch.Tensor  # (B,) leading pad count: positions are counted from the first real token
    index: torch.Tensor  # (B, m) original position of each current slot
    valid: torch.Tensor  # (B, m) False for padding and filler slots

    @classmethod
    def start(cls, labels: torch.Tensor, valid: torch.Tensor) -> TokenSet:
        batch, length = labels.shape
        index = torch.arange(length, device=labels.device).expand(batch, length)
        return cls(labels.masked_fill(~valid, int(Modality.PAD)), pad_offsets(valid), index, valid)

    def current_labels(self) -> torch.Tensor:
        return self.labels.gather(-1, self.index).masked_fill(~self.valid, int(Modality.PAD))

    def counts(self) -> torch.Tensor:
        """(B, len(Modality)) tokens per modality in the current slots."""
        return count_modalities(self.current_labels())

    def drop_mask(
        self, step: PruneStep, scores: torch.Tensor | None, config: FastAVConfig, modalities: tuple[Modality, ...]
    ) -> torch.Tensor:
        prunable = self.valid & prunable_mask(self.current_labels(), modalities)
        prunable[:, -1] = False  # the last token carries the answer: never pruned
        positions = self.index - self.offsets[:, None]
        return selection.select(
            step, prunable, positions, scores, config.global_cut, config.global_keep_ratio, config.seed
        )

    def keep(self, drop: torch.Tensor) -> torch.Tensor:
        """Drop slots in place; returns the (B, m') gather order over the previous slots."""
        order, self.valid = selection.compact(self.valid & ~drop)
        self.index = self.index.gather(-1, order)
        return order


def schedule(labels: torch.Tensor, plan: Plan, config: FastAVConfig) -> torch.Tensor:
    """(L, B, len(Modality)) tokens entering each layer, for inputs labelled `labels` (no padding).

    Score-based rules see uniform scores; that changes which tokens go, not how many.
    """
    modalities = tuple(Modality[m.upper()] for m in config.modalities)
    tokens = TokenSet.start(labels, labels != int(Modality.PAD))
    steps, counts = plan.by_layer, []
    for layer in range(plan.num_layers):
        if layer in steps and not config.dry_run:
            tokens.keep(tokens.drop_mask(steps[layer], torch.zeros(tokens.index.shape), config, modalities))
        counts.append(tokens.counts())
    return torch.stack(counts)
