"""The pruner: shrinks the token set between decoder layers during prefill, through forward pre-hooks.

Hooks (public PyTorch extension points; no modeling code is copied or replaced):
  - on the top module: remember the `input_ids` of the call (the Omni thinker's text model only sees embeds);
  - on the text model: start a pass; prefill when the cache is empty, decode otherwise;
  - on every decoder layer: at a prune layer gather the kept hidden rows; at every layer after the first
    prune gather cos/sin to the kept rows, build that layer's mask from the kept slice of the 2-D mask
    (extended by the decode columns) and pass `position_ids=None` (gapped ids would look like packing);
  - after the text model: turn the pass's counts into per-sample stats.
Kept tokens keep their original rotary positions because cos/sin are gathered, not recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.masking_utils import create_causal_mask

from fastav import attention
from fastav.config import FastAVConfig
from fastav.flops import ModelDims
from fastav.layout import Layout, modality_from_name
from fastav.models import Adapter, UnsupportedModelError
from fastav.plan import Plan, build_plan
from fastav.stats import SampleStats, build_sample_stats
from fastav.tokens import TokenSet


@dataclass
class _Pass:
    """State of one forward of the text model."""

    prefill: bool
    past_key_values: object | None
    tokens: TokenSet | None = None  # prefill: which original tokens the current slots hold
    counts: list[torch.Tensor] = field(default_factory=list)  # prefill: per layer, tokens per modality entering it
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    # decode: the 2-D mask columns after the prompt (earlier generated tokens and the current ones)
    tail: torch.Tensor | None = None


class Pruner:
    """FastAV state for one model. Create with `fastav.enable(model, config)`; undo with `fastav.disable`."""

    def __init__(self, adapter: Adapter, config: FastAVConfig, layout: Layout | None = None) -> None:
        self.adapter = adapter
        self.config = config
        self.plan: Plan = build_plan(config, adapter.num_layers, adapter.min_prune_layer)
        self.layout = layout if layout is not None else adapter.default_layout
        self.prunable = tuple(modality_from_name(m) for m in config.modalities)
        self.dims = ModelDims.from_config(adapter.text_config)
        # Results of the last prefill, readable after forward() / generate():
        self.stats: list[SampleStats] = []
        self.scores: dict[int, torch.Tensor] = {}  # scoring layer -> (B, slots) last-query head-mean attention
        self.layer_positions: dict[int, torch.Tensor] = {}  # layer -> (B, slots) original position of each slot
        self.layer_valid: dict[int, torch.Tensor] = {}  # layer -> (B, slots) False for padding/filler slots
        self._steps = self.plan.by_layer
        self._first_prune = None if config.dry_run else self.plan.first_prune_layer
        self._pending_input_ids: torch.Tensor | None = None
        self._pending_labels: torch.Tensor | None = None
        self._pass: _Pass | None = None
        self._prompt_len = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._original_backend: str | None = None

    # ----------------------------------------------------------------------------------------- lifecycle
    def attach(self) -> None:
        attention.register_backends()
        backend = self.adapter.text_config._attn_implementation
        self._original_backend = backend
        self._set_backend(attention.scoring_name(backend))
        top, text = self.adapter.top, self.adapter.text_model
        self._handles.append(top.register_forward_pre_hook(self._on_top, with_kwargs=True))
        self._handles.append(text.register_forward_pre_hook(self._on_text_model, with_kwargs=True))
        self._handles.append(text.register_forward_hook(self._after_text_model, with_kwargs=True))
        for i, layer in enumerate(self.adapter.layers):
            attention.attach(layer.self_attn, self)
            self._handles.append(layer.register_forward_pre_hook(self._layer_hook(i), with_kwargs=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for layer in self.adapter.layers:
            attention.detach(layer.self_attn)
        if self._original_backend is not None:
            self._set_backend(self._original_backend)
        self._pass = None

    def _set_backend(self, name: str) -> None:
        configs = {id(c): c for c in [self.adapter.text_config] + [l.self_attn.config for l in self.adapter.layers]}
        for config in configs.values():
            config._attn_implementation = name

    def set_modalities(self, labels: torch.Tensor) -> None:
        """Explicit (B, n) Modality labels for the next prefill (overrides the layout once)."""
        self._pending_labels = labels.long()

    # --------------------------------------------------------------------------- attention.ScoreSink API
    def wants_scores(self, layer_idx: int) -> bool:
        return self._pass is not None and self._pass.prefill and layer_idx in self.plan.scoring_layers

    def key_valid(self) -> torch.Tensor:
        assert self._pass is not None and self._pass.tokens is not None
        return self._pass.tokens.valid

    def put_scores(self, layer_idx: int, scores: torch.Tensor) -> None:
        assert self._pass is not None
        self._pass.scores[layer_idx] = scores

    # ---------------------------------------------------------------------------------------------- hooks
    def _on_top(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        self._pending_input_ids = ids
        return None

    def _on_text_model(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        embeds = kwargs.get("inputs_embeds")
        batch, length = (ids if ids is not None else embeds).shape[:2]
        device = (ids if ids is not None else embeds).device
        mask = kwargs.get("attention_mask")
        if isinstance(mask, dict) or (mask is not None and mask.ndim != 2):
            raise UnsupportedModelError(
                "FastAV needs the 2-D padding mask; a prepared 4-D mask (static/compiled caches) is not supported"
            )
        cache = kwargs.get("past_key_values")
        if cache is not None and (
            not isinstance(cache, DynamicCache) or any(type(l) is not DynamicLayer for l in cache.layers)
        ):
            raise UnsupportedModelError(
                f"FastAV keeps per-layer pruned caches in a DynamicCache; got {type(cache).__name__}"
            )
        past = cache.get_seq_length() if cache is not None else 0
        if past == 0:
            self._start_prefill(ids, mask, cache, batch, length, device)
        else:
            if self._first_prune is not None and self._first_prune not in self.layer_valid:
                raise RuntimeError("decode step on a cache that FastAV did not prefill")
            total = past + length
            tail = (
                mask[:, self._prompt_len : total].bool()
                if mask is not None
                else torch.ones(batch, total - self._prompt_len, dtype=torch.bool, device=device)
            )
            self._pass = _Pass(prefill=False, past_key_values=cache, tail=tail)
        return None

    def _start_prefill(self, ids, mask, cache, batch, length, device) -> None:
        valid = mask.bool() if mask is not None else torch.ones(batch, length, dtype=torch.bool, device=device)
        if not bool(valid[:, -1].all()):
            raise ValueError("FastAV needs left padding (the last position must be a real token in every row)")
        if self._pending_labels is not None:
            labels = self._pending_labels.to(device)
            self._pending_labels = None
            if labels.shape != (batch, length):
                raise ValueError(f"set_modalities labels have shape {tuple(labels.shape)}, expected {(batch, length)}")
        elif self.layout is None:
            raise ValueError(
                f"no token layout for {self.adapter.family}: pass a preset/layout to fastav.enable or call "
                "pruner.set_modalities(labels) before each prefill"
            )
        else:
            labels = self.layout.labels(ids if ids is not None else self._pending_input_ids, valid)
            if labels.shape != (batch, length):
                raise ValueError(f"layout labels {tuple(labels.shape)} do not match the input {(batch, length)}")
        self._pass = _Pass(prefill=True, past_key_values=cache, tokens=TokenSet.start(labels, valid))
        self._prompt_len = length
        self.scores, self.layer_positions, self.layer_valid = {}, {}, {}

    def _layer_hook(self, i: int):
        def hook(module, args, kwargs):
            state = self._pass
            if state is None:
                return None
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if state.prefill:
                hidden = self._prefill_layer(i, hidden, kwargs)
            elif self._first_prune is not None and i >= self._first_prune:
                kv_valid = torch.cat([self.layer_valid[i], state.tail], dim=-1)
                kwargs["attention_mask"] = self._mask(i, hidden, kv_valid, state.past_key_values)
                kwargs["position_ids"] = None
            return (hidden, *args[1:]), kwargs

        return hook

    def _prefill_layer(self, i: int, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        state = self._pass
        tokens = state.tokens
        step = self._steps.get(i)
        if step is not None:
            drop = tokens.drop_mask(step, state.scores.get(i - 1), self.config, self.prunable)
            if not self.config.dry_run:
                order = tokens.keep(drop)
                hidden = hidden.gather(1, order[..., None].expand(-1, -1, hidden.shape[-1]))
        if step is not None or not state.counts:
            state.counts.append(tokens.counts())
        else:
            state.counts.append(state.counts[-1])
        self.layer_positions[i], self.layer_valid[i] = tokens.index, tokens.valid
        if self._first_prune is not None and i >= self._first_prune:
            cos, sin = kwargs["position_embeddings"]
            kwargs["position_embeddings"] = (self._gather_rows(cos, tokens.index), self._gather_rows(sin, tokens.index))
            kwargs["attention_mask"] = self._mask(i, hidden, tokens.valid, state.past_key_values)
            kwargs["position_ids"] = None
        return hidden

    @staticmethod
    def _gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Pick rows `index` (B, m) along the sequence axis of a (B|1, n, d) rotary table."""
        table = table.expand(index.shape[0], -1, -1)
        return table.gather(1, index[..., None].expand(-1, -1, table.shape[-1]))

    def _mask(self, i: int, hidden: torch.Tensor, kv_valid: torch.Tensor, cache) -> object:
        return create_causal_mask(
            config=self.adapter.text_config,
            inputs_embeds=hidden,
            attention_mask=kv_valid,
            past_key_values=cache,
            position_ids=None,
            layer_idx=i,
        )

    def _after_text_model(self, module, args, kwargs, output):
        state = self._pass
        if state is not None and state.prefill:
            self.scores = dict(state.scores)
            self.stats = build_sample_stats(
                torch.stack(state.counts),
                self.prunable,
                self.dims,
                self.config.summary(),
                self.plan.first_prune_layer,
                self.plan.scoring_layers,
            )
        self._pending_input_ids = None
        return None
