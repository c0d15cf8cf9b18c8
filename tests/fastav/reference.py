"""Oracle for pruning: the unmodified model in eager attention, masking exactly the dropped keys per layer.

It shares no code with fastav's pruner. Every token keeps flowing through every layer at full length; at
layer l the keys of tokens dropped before l get zero attention weight, in prefill and in every decode step.
A kept token therefore sees exactly what it sees in the pruned model, so the last position's logits and the
generated tokens must match. Which tokens drop is decided here, per row with plain Python, from this run's
own eager attention weights (last row, head mean): the rules are re-implemented from their definitions.
"""

from __future__ import annotations

import math

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.llama.modeling_llama import eager_attention_forward

NAME = "test_masked_key_reference"


class MaskedKeyReference:
    def __init__(
        self,
        model,
        text_config,
        av_labels: torch.Tensor,
        steps: dict[int, tuple[str, float]],
        cut: int | None = None,
        keep_ratio: float = 1 / 3,
        seed: int = 0,
        replay: dict[int, torch.Tensor] | None = None,
        score_queries: int = 1,
    ):
        """av_labels (B, n): True where a token may be pruned. steps: layer -> (rule, fraction).

        `replay` (layer -> (B, n) bool, the tokens alive after that layer's step) replaces the decisions with
        recorded ones: in bf16, near-tied scores legitimately flip decisions between two implementations, so
        a bf16 run is checked against the keep sets it actually used.
        """
        self.model, self.steps, self.cut, self.keep_ratio, self.seed = model, steps, cut, keep_ratio, seed
        self.replay, self.score_queries = replay, score_queries
        self.av = av_labels.bool()
        self.dead: dict[int, torch.Tensor] = {}  # layer -> (B, n_prompt) keys hidden at that layer
        self.alive: torch.Tensor | None = None
        self.scores: dict[int, torch.Tensor] = {}
        self.prompt_len = av_labels.shape[1]
        self.valid: torch.Tensor | None = None
        AttentionInterface.register(NAME, self._attention)
        AttentionMaskInterface.register(NAME, eager_mask)
        text_config._attn_implementation = NAME

    def set_valid(self, attention_mask: torch.Tensor) -> None:
        self.valid = attention_mask.bool()
        self.alive = self.valid.clone()

    @staticmethod
    def recorded(pruner, shape: tuple[int, int]) -> dict[int, torch.Tensor]:
        """The keep sets a pruner used in its last prefill, per pruned layer, as (B, n) alive masks."""
        replay = {}
        for step in pruner.plan.steps:
            positions, valid = pruner.layer_positions[step.layer], pruner.layer_valid[step.layer]
            alive = torch.zeros(shape, dtype=torch.bool, device=positions.device)
            replay[step.layer] = alive.scatter_(1, positions, valid)
        return replay

    def _apply_step(self, layer: int) -> None:
        rule, fraction = self.steps[layer]
        for b in range(self.alive.shape[0]):
            last = self.prompt_len - 1
            candidates = [p for p in range(self.prompt_len) if self.alive[b, p] and self.av[b, p] and p != last]
            first_real = int(self.valid[b].long().argmax())
            if rule == "drop_fraction":
                n_drop = math.floor(fraction * len(candidates))
                ranked = sorted(candidates, key=lambda p: (float(self.scores[layer - 1][b, p]), p))
                dropped = ranked[:n_drop]
            else:
                if self.cut is not None:
                    budget = sum(1 for p in candidates if p - first_real < self.cut)
                else:
                    budget = round(self.keep_ratio * len(candidates))
                if rule == "keep_first":
                    dropped = candidates[budget:]
                elif rule == "keep_top":
                    ranked = sorted(candidates, key=lambda p: (float(self.scores[layer - 1][b, p]), p))
                    dropped = ranked[: len(candidates) - budget]
                else:  # random: a seeded permutation of the row's candidates, the first `budget` survive
                    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(self.seed))
                    dropped = [candidates[int(i)] for i in order[budget:]]
            for p in dropped:
                self.alive[b, p] = False

    def _attention(self, module, query, key, value, attention_mask, scaling=None, **kwargs):
        layer = module.layer_idx
        q_len, kv_len = query.shape[2], key.shape[2]
        if q_len == kv_len:  # prefill
            if layer in self.steps:
                if self.replay is not None:
                    self.alive = self.replay[layer].to(self.alive.device) & self.valid
                else:
                    self._apply_step(layer)
            self.dead[layer] = self.valid & ~self.alive
        dead = torch.zeros(key.shape[0], kv_len, dtype=torch.bool, device=key.device)
        dead[:, : self.prompt_len] = self.dead[layer]
        mask = attention_mask.masked_fill(dead[:, None, None, :], torch.finfo(attention_mask.dtype).min)
        out, weights = eager_attention_forward(module, query, key, value, mask, scaling=scaling, **kwargs)
        if q_len == kv_len:
            # the rows of the last `score_queries` tokens still alive (causal already), mean over heads and rows
            scores = torch.zeros(weights.shape[0], kv_len, dtype=weights.dtype, device=weights.device)
            for b in range(weights.shape[0]):
                rows = [p for p in range(self.prompt_len) if self.alive[b, p]][-self.score_queries :]
                scores[b] = weights[b][:, rows, :].mean((0, 1))
            self.scores[layer] = scores
        return out, weights
