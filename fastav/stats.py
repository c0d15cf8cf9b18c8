"""Per-sample pruning statistics: what went in, what each layer processed, what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from fastav.flops import ModelDims, prefill_flops
from fastav.layout import COUNTED, MODALITY_NAMES, Modality


def _named(counts: torch.Tensor) -> dict[str, int]:
    return {MODALITY_NAMES[int(m)]: int(counts[int(m)]) for m in COUNTED}


@dataclass(frozen=True)
class SampleStats:
    strategy: str
    settings: dict[str, object]
    input_tokens: dict[str, int]  # per modality, padding excluded
    after_global: dict[str, int] | None  # per modality entering the global layer; None without a global stage
    final_tokens: dict[str, int]  # per modality entering the last layer
    tokens_per_layer: list[int]  # total tokens each decoder layer processed in prefill
    av_tokens_per_layer: list[int]  # of which prunable AV tokens
    flops_unpruned: float  # real-dimension formula (fastav.flops), decoder layers, prefill
    flops_pruned: float
    flops_ratio: float
    fastv_flops_ratio: float  # FastV's formula, as in the paper's tables

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def build_sample_stats(
    counts: torch.Tensor,
    prunable: tuple[Modality, ...],
    dims: ModelDims,
    settings: dict[str, object],
    global_layer: int | None,
    scored_layers: frozenset[int],
) -> list[SampleStats]:
    """counts: (L, B, len(Modality)) tokens per modality entering each layer."""
    counts = counts.cpu()
    av_index = [int(m) for m in prunable]
    out = []
    for row in range(counts.shape[1]):
        per_layer = counts[:, row]
        totals = per_layer[:, 1:].sum(-1).tolist()  # column 0 is padding
        report = prefill_flops(totals, dims, scored_layers)
        out.append(
            SampleStats(
                strategy=str(settings["strategy"]),
                settings=dict(settings),
                input_tokens=_named(per_layer[0]),
                after_global=_named(per_layer[global_layer]) if global_layer is not None else None,
                final_tokens=_named(per_layer[-1]),
                tokens_per_layer=[int(t) for t in totals],
                av_tokens_per_layer=per_layer[:, av_index].sum(-1).tolist(),
                flops_unpruned=report.unpruned,
                flops_pruned=report.pruned,
                flops_ratio=report.ratio,
                fastv_flops_ratio=report.fastv_ratio,
            )
        )
    return out
