"""The pruner: shrinks the token set between decoder layers during prefill, through forward pre-hooks.

Hooks (public PyTorch extension points; no modeling code is copied or replaced):
  - on the top module: remember the `input_ids` of the call (the Omni thinker's text model only sees embeds);
  - on the text model: start a pass; prefill when the cache is empty, decode otherwise;
  - on every decoder layer from the first prune on: at a prune layer gather the kept hidden rows; at every
    such layer give it the cos/sin of its kept rows, its own mask (`fastav.masks`) and `position_ids=None`
    (gapped ids would look like packed sequences to flash-attention);
  - after the text model: keep what decoding and the stats need.
On a static cache (`fastav.static_cache`) every layer also gets a hook that hands it its own mask: the
prompt's padding mask in prefill where no prune layer has set one, and its cache layer's decode mask after.
Kept tokens keep their original rotary positions because cos/sin are gathered, not recomputed.

Cost discipline (the GPU runs ahead of Python only while nothing reads a device value back): a prefill reads
the per-row counts once when it starts and nothing after; every shape comes from host counts. Stats are
built when `stats` is first read. A decode step writes one column set into the decode masks and hands each
pruned layer a view; layers before the first prune carry no hook at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from fastav import attention, static_cache
from fastav.adapter import Adapter, UnsupportedModelError
from fastav.config import FastAVConfig
from fastav.layout import Layout, modality_from_name
from fastav.masks import EAGER, FLASH, DecodeMasks, PrefillMasks, mask_format
from fastav.plan import Plan, build_plan
from fastav.stats import SampleStats, Segment, build_sample_stats, layer_segments
from fastav.tokens import TokenSet, schedule


@dataclass
class _Prefill:
    """State of one prefill of the text model."""

    tokens: TokenSet
    masks: PrefillMasks
    segments: list[Segment]
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    # the current slot set's rotary tables and mask, rebuilt at each prune layer only
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    mask: torch.Tensor | None = None
    # pruned layer -> (slot validity, whether some row has filler): what the decode masks are built from
    layer_keys: dict[int, tuple[torch.Tensor, bool]] = field(default_factory=dict)
    # on a static cache: the cache, and the padding mask of the layers no prune step has given one
    static: object | None = None
    input_mask: torch.Tensor | None = None


class Pruner:
    """FastAV state for one model. Create with `fastav.enable(model, config)`; undo with `fastav.disable`."""

    def __init__(self, adapter: Adapter, config: FastAVConfig, layout: Layout | None = None) -> None:
        self.adapter = adapter
        self.config = config
        self.plan: Plan = build_plan(config, adapter.num_layers, adapter.min_prune_layer, adapter.min_prune_reason)
        self.layout = layout if layout is not None else adapter.default_layout
        self.prunable = tuple(modality_from_name(m) for m in config.modalities)
        self.dims = adapter.model_dims
        # Results of the last prefill, readable after forward() / generate():
        self.scores: dict[int, torch.Tensor] = {}  # scoring layer -> (B, slots) last-query head-mean attention
        self.layer_positions: dict[int, torch.Tensor] = {}  # layer -> (B, slots) original position of each slot
        self.layer_valid: dict[int, torch.Tensor] = {}  # layer -> (B, slots) False for padding/filler slots
        self._stats: list[SampleStats] | None = []
        self._segments: list[Segment] = []
        self._steps = self.plan.by_layer
        self._first_prune = None if config.dry_run else self.plan.first_prune_layer
        self._pending_input_ids: torch.Tensor | None = None
        self._pending_labels: torch.Tensor | None = None
        self._prefill: _Prefill | None = None
        self._decode: DecodeMasks | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._original_backend: str | None = None
        self._paused = False
        # static caches: slots are allocated in multiples of `length_bucket`; rows in `batch_buckets` (set by
        # the compiled decode, which pads each step's batch to the bucket)
        self.length_bucket = static_cache.DEFAULT_LENGTH_BUCKET
        self.batch_buckets: tuple[int, ...] = ()
        self._static_hooks = False
        self.compiled = None  # fastav.compiled.CompiledDecode, when one is installed

    # ----------------------------------------------------------------------------------------- lifecycle
    def attach(self) -> None:
        backend = self.adapter.text_config._attn_implementation
        if backend.startswith(attention.PREFIX):
            backend = backend[len(attention.PREFIX) :]
        self._mask_format = mask_format(backend)
        if self.plan.scoring_layers:  # only scoring needs the wrapped attention function
            attention.register_backends()
            self._original_backend = self.adapter.text_config._attn_implementation
            self._set_backend(attention.scoring_name(backend))
        top, text = self.adapter.top, self.adapter.text_model
        self._handles.append(top.register_forward_pre_hook(self._on_top, with_kwargs=True))
        self._handles.append(text.register_forward_pre_hook(self._on_text_model, with_kwargs=True))
        self._handles.append(text.register_forward_hook(self._after_text_model, with_kwargs=True))
        for i, layer in enumerate(self.adapter.layers):
            attention.attach(layer.self_attn, self)
            if self.plan.first_prune_layer is not None and i >= self.plan.first_prune_layer:
                self._handles.append(layer.register_forward_pre_hook(self._layer_hook(i), with_kwargs=True))

    def detach(self) -> None:
        if self.compiled is not None:
            self.compiled.remove()
            self.compiled = None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._static_hooks = False
        for layer in self.adapter.layers:
            attention.detach(layer.self_attn)
        if self._original_backend is not None:
            self._set_backend(self._original_backend)
        self._prefill = self._decode = None

    def _set_backend(self, name: str) -> None:
        configs = {id(c): c for c in [self.adapter.text_config] + [l.self_attn.config for l in self.adapter.layers]}
        for config in configs.values():
            config._attn_implementation = name

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Run the model unpruned inside the block (a shadow baseline through the same loaded model); the stats,
        scores and decode state of the last pruned prefill are left as they were."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def set_modalities(self, labels: torch.Tensor) -> None:
        """Explicit (B, n) Modality labels for the next prefill (overrides the layout once)."""
        self._pending_labels = labels.long()

    @property
    def settings(self) -> dict[str, object]:
        """The settings that ran, with the defaults resolved against this model (e.g. global_layer = L/2)."""
        settings = self.config.summary()
        if self.config.strategy in ("fastav", "random", "low_attentive"):
            settings["global_layer"] = self.plan.global_layer
        if self.config.strategy == "fastv":
            settings["fastv_layer"] = self.plan.global_layer
        if self.config.strategy == "gradual" and self.plan.steps:
            settings["gradual_start"] = self.plan.first_prune_layer
            settings["drop_per_layer"] = round(self.plan.steps[0].fraction, 6)
        return settings

    @property
    def stats(self) -> list[SampleStats]:
        """One SampleStats per row of the last prefill (built on first read: one device read)."""
        if self._stats is None:
            self._stats = build_sample_stats(
                self._segments,
                self.adapter.num_layers,
                self.dims,
                self.settings,
                self.plan.first_prune_layer,
                self.plan.scoring_layers,
                self.config.score_queries,
                self.adapter.text_model.dtype.itemsize,
            )
        return self._stats

    def planned_cache_tokens(self, input_ids: torch.Tensor) -> int:
        """The keys one prompt (1-D ids, no padding) leaves in the KV cache after a prefill, summed over the
        decoder layers: what batch planning counts (host arithmetic on its labels; the model does not run)."""
        ids = torch.tensor(input_ids).reshape(1, -1)  # a copy: payload arrays are read-only views
        if self.layout is None:
            return ids.shape[1] * self.adapter.num_layers
        labels = self.layout.labels(ids, torch.ones_like(ids, dtype=torch.bool))
        segments = layer_segments(schedule(labels, self.plan, self.config), self.adapter.num_layers)
        return sum(s.tokens[0] for s in segments)

    # --------------------------------------------------------------------------- attention.ScoreSink API
    def wants_scores(self, layer_idx: int) -> bool:
        return not self._paused and self._prefill is not None and layer_idx in self.plan.scoring_layers

    def key_valid(self) -> torch.Tensor:
        assert self._prefill is not None
        return self._prefill.tokens.valid

    @property
    def score_queries(self) -> int:
        return self.config.score_queries

    def put_scores(self, layer_idx: int, scores: torch.Tensor) -> None:
        assert self._prefill is not None
        tokens = self._prefill.tokens
        self._prefill.scores[layer_idx] = scores
        self.layer_positions[layer_idx], self.layer_valid[layer_idx] = tokens.index, tokens.valid

    # ---------------------------------------------------------------------------------------------- hooks
    def _on_top(self, module, args, kwargs):
        if self._paused:
            return None
        ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        self._pending_input_ids = ids
        return None

    def _on_text_model(self, module, args, kwargs):
        if self._paused:
            return None
        ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        embeds = kwargs.get("inputs_embeds")
        batch, length = (ids if ids is not None else embeds).shape[:2]
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("past_key_values")
        if static_cache.is_static(cache):
            self._on_static_cache(cache, ids, embeds, mask, batch, length)
            return None
        if isinstance(mask, dict) or (mask is not None and mask.ndim != 2):
            raise UnsupportedModelError(
                f"FastAV needs the 2-D padding mask, or a static cache (generate(cache_implementation='static')); got "
                f"a prepared mask with a {type(cache).__name__}"
            )
        past = cache.get_seq_length() if cache is not None else 0
        if past == 0:
            if cache is not None and (
                not isinstance(cache, DynamicCache) or any(type(l) is not DynamicLayer for l in cache.layers)
            ):
                raise UnsupportedModelError(
                    f"FastAV keeps per-layer pruned caches in a DynamicCache; got {type(cache).__name__}"
                )
            self._start_prefill(ids, embeds, mask, batch, length)
        else:
            self._prefill = None
            if self._first_prune is not None:
                if self._decode is None:
                    raise RuntimeError("decode step on a cache that FastAV did not prefill")
                if length > 1:  # the decode masks hold one new column per step, no causal block among new tokens
                    raise UnsupportedModelError(
                        f"FastAV decodes one token per step on its pruned caches; got {length} (assisted or "
                        "speculative decoding is not supported)"
                    )
                self._decode.step(mask, past + length)
        return None

    def _on_static_cache(self, cache, ids, embeds, mask, batch, length) -> None:
        """A static cache: decode steps need nothing here (each layer's mask comes from its cache layer); a
        prefill takes the cache over and reads the padding mask back from the one generate() prepared."""
        if static_cache.decoding(cache):
            if length > 1:
                raise UnsupportedModelError(
                    f"FastAV decodes one token per step on its pruned caches; got {length} (assisted or "
                    "speculative decoding is not supported)"
                )
            return
        if cache.layers[0].is_initialized:
            raise RuntimeError("decode step on a static cache that FastAV did not prefill")
        if self._mask_format == FLASH:
            raise UnsupportedModelError(
                "FastAV's static cache needs sdpa or eager attention; flash-attention decodes on the dynamic cache"
            )
        if not static_cache.is_pruned(cache):
            static_cache.adopt(cache, length, self.length_bucket, self.batch_buckets)
        self._add_static_hooks()
        self._start_prefill(ids, embeds, static_cache.padding_mask(mask, length), batch, length)
        state = self._prefill
        state.static = cache
        state.input_mask = state.masks.build(state.tokens.valid, state.tokens.has_filler())

    def _add_static_hooks(self) -> None:
        if not self._static_hooks:
            for i, layer in enumerate(self.adapter.layers):
                self._handles.append(layer.register_forward_pre_hook(self._static_layer_hook(i), with_kwargs=True))
            self._static_hooks = True

    def _static_layer_hook(self, i: int):
        # layers from here on get their prefill mask from `_layer_hook`
        prefill_masked_by_pruner = self._first_prune if self._first_prune is not None else self.adapter.num_layers
        additive = self.adapter.text_model.dtype if self._mask_format == EAGER else None

        def hook(module, args, kwargs):
            cache = kwargs.get("past_key_values")
            if self._paused or not static_cache.is_pruned(cache):
                return None
            layer = cache.layers[i]
            if layer.decoding:
                kwargs["attention_mask"] = layer.decode_mask(additive)
                return args, kwargs
            if self._prefill is not None and i < prefill_masked_by_pruner:
                kwargs["attention_mask"] = self._prefill.input_mask
                return args, kwargs
            return None

        return hook

    def _start_prefill(self, ids, embeds, mask, batch, length) -> None:
        device = (ids if ids is not None else embeds).device
        valid = mask.bool() if mask is not None else torch.ones(batch, length, dtype=torch.bool, device=device)
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
        tokens = TokenSet.start(labels, valid, self.prunable, self.config.global_cut)
        dtype = embeds.dtype if embeds is not None else self.adapter.text_model.dtype
        self._prefill = _Prefill(tokens, PrefillMasks(self._mask_format, dtype), [tokens.segment(0)])
        self._decode, self._prompt_len = None, length
        self.scores, self.layer_positions, self.layer_valid = {}, {}, {}

    def _layer_hook(self, i: int):
        def hook(module, args, kwargs):
            if self._paused:
                return None
            if self._prefill is not None and self.config.dry_run:
                self._select_only(i)
                return None
            if self._prefill is not None:
                hidden = args[0] if args else kwargs.pop("hidden_states")
                hidden = self._prefill_layer(i, hidden, kwargs)
                return (hidden, *args[1:]), kwargs
            if self._decode is not None:
                kwargs["attention_mask"] = self._decode.get(i, kwargs.get("attention_mask") is None)
                kwargs["position_ids"] = None
                return args, kwargs
            return None

        return hook

    def _select_only(self, i: int) -> None:
        """dry_run: choose the tokens a step would drop (its cost is part of the probe) and keep them all."""
        step, state = self._steps.get(i), self._prefill
        if step is not None:
            state.tokens.drop_mask(step, state.tokens.drops(step, self.config), state.scores.get(i - 1), self.config)

    def _prefill_layer(self, i: int, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        state = self._prefill
        tokens = state.tokens
        step = self._steps.get(i)
        if step is not None:
            drops = tokens.drops(step, self.config)
            if any(drops) or max(tokens.kept) < tokens.width or state.rotary is None:
                order = tokens.keep(tokens.drop_mask(step, drops, state.scores.get(i - 1), self.config), drops)
                hidden = hidden.gather(1, order[..., None].expand(-1, -1, hidden.shape[-1]))
                cos, sin = kwargs["position_embeddings"]
                state.rotary = (self._gather_rows(cos, tokens.index), self._gather_rows(sin, tokens.index))
                state.mask = state.masks.build(tokens.valid, tokens.has_filler())
                state.segments.append(tokens.segment(i))
            self.layer_positions[i], self.layer_valid[i] = tokens.index, tokens.valid
        state.layer_keys[i] = (tokens.valid, tokens.has_filler())
        kwargs["position_embeddings"] = state.rotary
        kwargs["attention_mask"] = state.mask
        kwargs["position_ids"] = None
        return hidden

    @staticmethod
    def _gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Pick rows `index` (B, m) along the sequence axis of a (B|1, n, d) rotary table."""
        table = table.expand(index.shape[0], -1, -1)
        return table.gather(1, index[..., None].expand(-1, -1, table.shape[-1]))

    def _after_text_model(self, module, args, kwargs, output):
        if self._paused:
            return None
        state = self._prefill
        if state is not None:
            self.scores = dict(state.scores)
            self._segments, self._stats = state.segments, None
            if state.static is not None:
                start, layers = state.segments[0].valid, range(len(self.adapter.layers))
                valid = [state.layer_keys[i][0] if i in state.layer_keys else start for i in layers]
                static_cache.begin_decode(state.static, valid, self._prompt_len)
            elif state.layer_keys:
                self._decode = DecodeMasks(state.layer_keys, self._prompt_len, self._mask_format, state.masks.dtype)
            self._prefill = None
        self._pending_input_ids = None
        return None
