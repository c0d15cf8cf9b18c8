"""TokenSet: which original tokens each row still carries, and how a pruning step shrinks it.

Every count that decides a shape lives on the host: the per-row counts are read once when the prefill
starts (`TokenSet.start`, the only host read of a prefill), and every later count follows from them and
the plan (floor(P * n), the cut, the keep ratio). The device tensors only say *which* tokens; nothing per
layer reads them back, so the GPU queue never drains between layers.

Shared by the pruner (on real hidden states) and by the FLOPs schedule of presets (on labels alone), so the
counts the CLI prints are the counts the model runs with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastav import selection
from fastav.config import FastAVConfig
from fastav.flops import ModelDims
from fastav.layout import Modality, pad_offsets, prunable_mask
from fastav.plan import Plan, PruneStep, build_plan
from fastav.stats import SampleStats, Segment, build_sample_stats


@dataclass
class TokenSet:
    # device, one column per current slot
    index: torch.Tensor  # (B, m) original position of each slot
    valid: torch.Tensor  # (B, m) False for padding and filler slots
    source_labels: torch.Tensor  # (B, n) Modality of each input position, PAD where masked
    prunable: torch.Tensor  # (B, m) may be dropped: valid, of a chosen modality, not the row's last token
    # host, one entry per row
    kept: list[int]  # valid slots
    n_prunable: list[int]  # prunable slots
    last_av: list[int]  # 1 where the last token is of a chosen modality (never pruned, but counted as AV)
    before_cut: list[int] | None  # prunable tokens before the global cut (None without a cut)

    @classmethod
    def start(
        cls, labels: torch.Tensor, valid: torch.Tensor, modalities: tuple[Modality, ...], cut: int | None
    ) -> TokenSet:
        """Label the slots and read the per-row counts: the one host read of a prefill."""
        batch, length = labels.shape
        labels = labels.masked_fill(~valid, int(Modality.PAD))
        index = torch.arange(length, device=labels.device).expand(batch, length)
        av = valid & prunable_mask(labels, modalities)
        prunable = av.clone()
        prunable[:, -1] = False  # the last token carries the answer: never pruned
        columns = [valid.sum(-1), prunable.sum(-1), av[:, -1].long(), valid[:, -1].long()]
        if cut is not None:  # positions count from each row's first real token
            columns.append((prunable & (index - pad_offsets(valid)[:, None] < cut)).sum(-1))
        counts = torch.stack(columns, dim=1).tolist()
        if not all(row[3] for row in counts):
            raise ValueError("FastAV needs left padding (the last position must be a real token in every row)")
        return cls(
            index=index,
            valid=valid,
            source_labels=labels,
            prunable=prunable,
            kept=[row[0] for row in counts],
            n_prunable=[row[1] for row in counts],
            last_av=[row[2] for row in counts],
            before_cut=[row[4] for row in counts] if cut is not None else None,
        )

    @property
    def width(self) -> int:
        return self.index.shape[1]

    @property
    def av_tokens(self) -> list[int]:
        return [n + last for n, last in zip(self.n_prunable, self.last_av, strict=True)]

    def drops(self, step: PruneStep, config: FastAVConfig) -> list[int]:
        """How many tokens each row drops at `step` (host arithmetic only)."""
        if step.rule == "drop_fraction":
            return [selection.drop_count(n, step.fraction) for n in self.n_prunable]
        cuts = self.before_cut or [None] * len(self.n_prunable)
        return [
            n - selection.global_keep(n, cut, config.global_keep_ratio)
            for n, cut in zip(self.n_prunable, cuts, strict=True)
        ]

    def drop_mask(
        self, step: PruneStep, drops: list[int], scores: torch.Tensor | None, config: FastAVConfig
    ) -> torch.Tensor:
        """(B, m) the slots that `step` drops: exactly `drops[b]` of row b's prunable slots."""
        if step.rule == "random":
            keep = [n - d for n, d in zip(self.n_prunable, drops, strict=True)]
            return selection.keep_random(self.prunable, keep, self.n_prunable, config.seed)
        if step.rule == "keep_first":
            keep = [n - d for n, d in zip(self.n_prunable, drops, strict=True)]
            return selection.keep_first(self.prunable, selection.to_device(keep, self.prunable.device))
        if scores is None:
            raise RuntimeError(f"pruning step at layer {step.layer} needs the scores of layer {step.layer - 1}")
        return selection.drop_lowest(scores, self.prunable, selection.to_device(drops, self.prunable.device))

    def keep(self, drop: torch.Tensor, drops: list[int]) -> torch.Tensor:
        """Drop the slots in `drop` (`drops[b]` per row); returns the (B, m') gather order over the old slots."""
        self.kept = [k - d for k, d in zip(self.kept, drops, strict=True)]
        self.n_prunable = [n - d for n, d in zip(self.n_prunable, drops, strict=True)]
        order, self.valid = selection.compact(self.valid & ~drop, max(self.kept))
        self.index = self.index.gather(-1, order)
        self.prunable = (self.prunable & ~drop).gather(-1, order)
        return order

    def has_filler(self) -> bool:
        """Whether some row holds fewer valid slots than the width (so a mask must hide the filler)."""
        return min(self.kept) < self.width

    def segment(self, layer: int) -> Segment:
        """This token set as the one entering `layer` (for stats)."""
        return Segment(layer, list(self.kept), self.av_tokens, self.source_labels, self.index, self.valid)


def schedule(labels: torch.Tensor, plan: Plan, config: FastAVConfig) -> list[Segment]:
    """The token sets entering the layers, for inputs labelled `labels` (no padding).

    Score-based rules see uniform scores; that changes which tokens go, not how many.
    """
    modalities = tuple(Modality[m.upper()] for m in config.modalities)
    tokens = TokenSet.start(labels, labels != int(Modality.PAD), modalities, config.global_cut)
    segments = [tokens.segment(0)]
    for step in plan.steps:
        if not config.dry_run:
            drops = tokens.drops(step, config)
            tokens.keep(tokens.drop_mask(step, drops, torch.zeros(tokens.index.shape), config), drops)
            segments.append(tokens.segment(step.layer))
    return segments


def planned_stats(labels: torch.Tensor, config: FastAVConfig, dims: ModelDims, min_layer: int = 1) -> SampleStats:
    """What `config` would do to one input labelled `labels` (1, n) on a model of `dims`: counts and FLOPs,
    without running the model."""
    plan = build_plan(config, dims.num_layers, min_layer)
    (stats,) = build_sample_stats(
        schedule(labels, plan, config),
        plan.num_layers,
        dims,
        config.summary(),
        plan.first_prune_layer,
        plan.scoring_layers,
        config.score_queries,
    )
    return stats
