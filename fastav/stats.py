"""Per-sample pruning statistics: what went in, what each layer processed, what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from fastav.flops import ModelDims, prefill_flops
from fastav.layout import COUNTED, MODALITY_NAMES, Modality, count_modalities


def _named(counts: list[int]) -> dict[str, int]:
    return {MODALITY_NAMES[int(m)]: counts[int(m)] for m in COUNTED}


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
    kv_cache_bytes: int = 0  # the prompt's keys and values over all layers after the prefill, pruned
    kv_cache_bytes_unpruned: int = 0  # the same without pruning (every layer holds every input token)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Segment:
    """A token set of one prefill and the first layer it enters (it lasts until the next segment's layer)."""

    layer: int
    tokens: list[int]  # per row, padding and filler excluded
    av_tokens: list[int]  # per row, tokens of the prunable modalities
    source_labels: torch.Tensor  # (B, n) Modality of each input position (device)
    index: torch.Tensor  # (B, m) input position of each slot
    valid: torch.Tensor  # (B, m) False for padding and filler slots

    def labels(self) -> torch.Tensor:
        """(B, m) Modality of each slot, PAD where not valid; built only when stats are read."""
        return self.source_labels.gather(-1, self.index).masked_fill(~self.valid, int(Modality.PAD))


def layer_segments(segments: list[Segment], num_layers: int) -> list[Segment]:
    """The segment each decoder layer runs on (a segment lasts until the next one's layer)."""
    return [max((s for s in segments if s.layer <= layer), key=lambda s: s.layer) for layer in range(num_layers)]


def build_sample_stats(
    segments: list[Segment],
    num_layers: int,
    dims: ModelDims,
    settings: dict[str, object],
    global_layer: int | None,
    scored_layers: frozenset[int],
    score_queries: int = 1,
    kv_element_size: int = 2,
) -> list[SampleStats]:
    """Per-sample stats of one prefill. Token counts are host values already; the per-modality counts at the
    input, the global layer and the last layer come from the recorded labels in one device read."""
    at_layer = layer_segments(segments, num_layers)
    probes = [segments[0], at_layer[global_layer if global_layer is not None else 0], at_layer[-1]]
    modality_counts = torch.stack([count_modalities(s.labels()) for s in probes]).tolist()
    out = []
    kv_per_token = dims.kv_bytes_per_token(kv_element_size)
    for row in range(len(segments[0].tokens)):
        totals = [s.tokens[row] for s in at_layer]
        report = prefill_flops(totals, dims, scored_layers, score_queries)
        inputs, after_global, final = (_named(counts[row]) for counts in modality_counts)
        out.append(
            SampleStats(
                strategy=str(settings["strategy"]),
                settings=dict(settings),
                input_tokens=inputs,
                after_global=after_global if global_layer is not None else None,
                final_tokens=final,
                tokens_per_layer=totals,
                av_tokens_per_layer=[s.av_tokens[row] for s in at_layer],
                flops_unpruned=report.unpruned,
                flops_pruned=report.pruned,
                flops_ratio=report.ratio,
                fastv_flops_ratio=report.fastv_ratio,
                kv_cache_bytes=sum(totals) * kv_per_token,
                kv_cache_bytes_unpruned=totals[0] * num_layers * kv_per_token,
            )
        )
    return out
