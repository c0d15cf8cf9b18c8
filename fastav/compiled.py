"""A compiled decode step for FastAV's static caches: the text model's forward under `torch.compile`.

`install(pruner)` routes the text model's decode steps on a FastAV static cache (`fastav.static_cache`)
through `torch.compile(text_model.forward, fullgraph=True, dynamic=False)`; prefills, dynamic caches and
paused (unpruned) calls run the eager forward as before. This is the pattern transformers documents
(`model.forward = torch.compile(model.forward, ...)`), on the text model only: the multimodal top model's
Python (rope indices, feature merging) stays outside the graph.

Shapes are bucketed so that one graph serves many batches: the cache rounds each layer's slots up to its
length bucket and its rows up to a batch bucket, and each step here pads the batch with filler rows to that
bucket (their outputs are dropped). A graph is keyed by (rows, slots per layer); each new key is compiled once
per process and logged with its compile time; past `max_graphs` keys, steps run the same code eagerly rather
than compile without bound. On CUDA the default mode is "reduce-overhead" (CUDA graphs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from fastav import static_cache

log = logging.getLogger(__name__)

MAX_GRAPHS = 8


@dataclass
class CompileStats:
    """What compiling cost: seconds of each graph's first step (trace + compile + run), by bucket key."""

    graphs: dict[tuple[int, ...], float] = field(default_factory=dict)
    refused: dict[tuple[int, ...], str] = field(default_factory=dict)  # buckets torch.compile could not take
    compiled_steps: int = 0
    eager_steps: int = 0  # steps of buckets past max_graphs or refused

    @property
    def compile_seconds(self) -> float:
        return sum(self.graphs.values())

    def summary(self) -> dict[str, object]:
        return {
            "graphs": len(self.graphs),
            "compile_s": round(self.compile_seconds, 3),
            "compiled_steps": self.compiled_steps,
            "eager_steps": self.eager_steps,
            "refused": sorted(set(self.refused.values())),
        }


class CompiledDecode:
    """Installed on one pruner's text model; `remove()` (or `fastav.disable`) puts the eager forward back."""

    def __init__(
        self,
        pruner,
        mode: str | None = None,
        backend: str = "inductor",
        batch_buckets: Sequence[int] = static_cache.POWERS_OF_TWO,
        max_graphs: int = MAX_GRAPHS,
    ) -> None:
        text = pruner.adapter.text_model
        if mode is None and backend == "inductor" and text.device.type == "cuda":
            mode = "reduce-overhead"
        self.mode, self.backend, self.max_graphs = mode, backend, max_graphs
        self.stats = CompileStats()
        self._pruner, self._text = pruner, text
        self._eager = text.forward
        self._compiled = torch.compile(self._eager, backend=backend, mode=mode, fullgraph=True, dynamic=False)
        self._cudagraphs = mode is not None and "reduce-overhead" in mode
        # each bucket is one more graph of the same code; let dynamo keep as many as we allow
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, max_graphs)
        self._batch_buckets = tuple(batch_buckets)
        self.active = True
        text.forward = self

    @property
    def active(self) -> bool:
        """False: static caches decode eagerly (unpadded rows) until set True again; the graphs are kept."""
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        self._active = value
        self._pruner.batch_buckets = self._batch_buckets if value else ()

    def remove(self) -> None:
        if self._text.__dict__.get("forward") is self:
            del self._text.forward
        self.active = False

    def __call__(self, *args, **kwargs):
        cache = kwargs.get("past_key_values")
        if args or not self._active or self._pruner._paused or not static_cache.decoding(cache):
            return self._eager(*args, **kwargs)
        key = static_cache.bucket_key(cache)
        new = key not in self.stats.graphs
        if key in self.stats.refused or (new and len(self.stats.graphs) >= self.max_graphs):
            self.stats.eager_steps += 1
            return self._step(self._eager, cache, kwargs)
        start = time.perf_counter()
        try:
            out = self._step(self._compiled, cache, kwargs)
        except (torch._dynamo.exc.TorchDynamoException, torch._dynamo.exc.FailOnRecompileLimitHit) as error:
            if not new:
                raise
            # tracing runs on fake tensors, so nothing was written yet: this step can still run eagerly
            self.stats.refused[key] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            log.warning("torch.compile refused a FastAV decode graph, decoding eagerly: %s", self.stats.refused[key])
            self.stats.eager_steps += 1
            return self._step(self._eager, cache, kwargs)
        if new:
            self.stats.graphs[key] = time.perf_counter() - start
            log.info("compiled a FastAV decode graph for %d rows in %.1f s (%d so far)", key[0],
                     self.stats.graphs[key], len(self.stats.graphs))  # fmt: skip
        self.stats.compiled_steps += 1
        return out

    def _step(self, forward, cache, kwargs: dict):
        """Pad the batch to the cache's rows, run, and hand back the real rows."""
        rows = cache.layers[0].rows
        batch = None
        for name in ("input_ids", "inputs_embeds"):
            if kwargs.get(name) is not None:
                batch = kwargs[name].shape[0]
        padded = {name: _pad_rows(value, name, batch, rows) for name, value in kwargs.items()}
        padded["attention_mask"] = None  # every layer takes its mask from its cache layer
        out = forward(**padded)
        if rows == batch and not self._cudagraphs:
            return out
        for name, value in out.items():
            if isinstance(value, torch.Tensor) and value.shape[:1] == (rows,):
                out[name] = value[:batch].clone()  # a CUDA graph's outputs are overwritten by its next replay
        return out


def _pad_rows(value, name: str, batch: int, rows: int):
    if not isinstance(value, torch.Tensor) or name in ("attention_mask",) or rows == batch:
        return value
    axis = value.ndim - 2 if name == "position_ids" else 0  # position ids are (B, q) or (axes, B, q)
    if value.shape[axis] != batch:
        return value
    filler = list(value.shape)
    filler[axis] = rows - batch
    return torch.cat([value, value.new_zeros(filler)], dim=axis)


def install(pruner, **options) -> CompiledDecode:
    """Compile `pruner`'s decode steps on static caches (see `CompiledDecode` for the options)."""
    if pruner.compiled is not None:
        pruner.compiled.remove()
    pruner.compiled = CompiledDecode(pruner, **options)
    return pruner.compiled
