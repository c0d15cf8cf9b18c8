"""Token layouts: label every position of every sample as padding, text, video, audio or image.

Two ways to know where the audio-visual tokens are:
  - `TokenIdLayout`: from `input_ids` and the model's placeholder token ids (Qwen2.5-Omni and other native
    transformers AV-LLMs; audio-in-video interleaving needs nothing special since each token says what it is);
  - `SpanLayout`: fixed spans counted from each sample's first non-pad token, for models fed `inputs_embeds`
    (VideoLLaMA2-AV and video-SALMONN2 presets over a Qwen2 decoder).
Callers can also pass explicit labels per call (`Pruner.set_modalities`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

import torch


class Modality(IntEnum):
    PAD = 0
    TEXT = 1
    VIDEO = 2
    AUDIO = 3
    IMAGE = 4


MODALITY_NAMES: dict[int, str] = {m.value: m.name.lower() for m in Modality}
COUNTED = (Modality.TEXT, Modality.VIDEO, Modality.AUDIO, Modality.IMAGE)


def modality_from_name(name: str) -> Modality:
    return Modality[name.upper()]


def pad_offsets(attention_mask: torch.Tensor) -> torch.Tensor:
    """Number of leading pad positions per row of a left-padded 2-D mask."""
    return (attention_mask.long().cumsum(-1) == 0).sum(-1)


@dataclass(frozen=True)
class TokenIdLayout:
    """Labels positions by placeholder token id."""

    video_ids: frozenset[int] = frozenset()
    audio_ids: frozenset[int] = frozenset()
    image_ids: frozenset[int] = frozenset()

    def labels(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids is None:
            raise ValueError(
                "this model's token layout is read from input_ids, but the forward got inputs_embeds only: pass "
                "input_ids, use a SpanLayout preset, or call pruner.set_modalities(labels) before the call"
            )
        # Comparisons with Python scalars and masked_fill: no host-to-device copy and no boolean indexing, which
        # would each stall a GPU queue (see fastav.tokens).
        out = torch.full(input_ids.shape, int(Modality.TEXT), dtype=torch.long, device=input_ids.device)
        for ids, modality in (
            (self.video_ids, Modality.VIDEO),
            (self.audio_ids, Modality.AUDIO),
            (self.image_ids, Modality.IMAGE),
        ):
            for token_id in sorted(ids):
                out.masked_fill_(input_ids == token_id, int(modality))
        return out.masked_fill_(~attention_mask.bool(), int(Modality.PAD))


@dataclass(frozen=True)
class SpanLayout:
    """Labels positions by spans (modality, start, end), counted from each row's first non-pad token.

    Positions outside every span are text (system prompt, question, answer prefix).
    """

    spans: tuple[tuple[Modality, int, int], ...]

    def __post_init__(self) -> None:
        for modality, start, end in self.spans:
            if not 0 <= start < end:
                raise ValueError(f"span {modality.name.lower()} [{start}, {end}) is empty or negative")

    def labels(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, n = attention_mask.shape
        rel = torch.arange(n, device=attention_mask.device)[None, :] - pad_offsets(attention_mask)[:, None]
        out = torch.full((batch, n), int(Modality.TEXT), dtype=torch.long, device=attention_mask.device)
        for modality, start, end in self.spans:
            out.masked_fill_((rel >= start) & (rel < end), int(modality))
        return out.masked_fill_(~attention_mask.bool(), int(Modality.PAD))

    @property
    def length(self) -> int:
        return max(end for _, _, end in self.spans)


Layout = TokenIdLayout | SpanLayout


def count_modalities(labels: torch.Tensor) -> torch.Tensor:
    """(B, n) labels -> (B, 5) counts indexed by Modality value (scatter_add: one_hot reads values on the host)."""
    counts = torch.zeros(labels.shape[0], len(Modality), dtype=torch.long, device=labels.device)
    return counts.scatter_add_(1, labels.long(), torch.ones_like(labels, dtype=torch.long))


def prunable_mask(labels: torch.Tensor, modalities: Iterable[Modality]) -> torch.Tensor:
    out = torch.zeros_like(labels, dtype=torch.bool)
    for modality in modalities:
        out |= labels == int(modality)
    return out
