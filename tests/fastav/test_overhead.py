"""FastAV's own cost per prefill and per decode step: host reads (GPU stalls), mask builds and kernels.

On a GPU a host read of a device value drains the queue, and Python work per layer per decode step is paid
at every generated token; FLOPs do not show either. These run on the CPU, where the same operations happen.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import profile
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

import fastav
from fastav import FastAVConfig
from fastav import testing as tiny
from fastav.hostsync import HostSyncCounter
from tests.fastav.test_equivalence import PLAIN_LAYOUT, omni_inputs, plain_inputs

CONFIGS = [
    FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.2),
    FastAVConfig(global_layer=2, global_cut=30, fine_ratio=0.3),
    FastAVConfig(strategy="random", global_layer=2, global_keep_ratio=0.5),
    FastAVConfig(strategy="low_attentive", global_layer=2, global_keep_ratio=0.5),
    FastAVConfig(strategy="fastv", fastv_layer=2, fastv_ratio=0.5),
    FastAVConfig(strategy="gradual", gradual_start=1, gradual_keep=0.3, score_queries=4),
    FastAVConfig(global_layer=2, dry_run=True),
]


def _local_scalar_dense(model, inputs) -> int:
    """What torch.profiler shows of host reads: aten::_local_scalar_dense (item / int / bool of a tensor)."""
    with torch.no_grad(), profile() as prof:
        model(**inputs)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")


def _host_reads(model, inputs) -> int:
    with torch.no_grad(), HostSyncCounter() as counter:
        model(**inputs)
    return counter.host_reads


@pytest.mark.parametrize("family", ["qwen2", "omni"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.strategy}{'-dry' if c.dry_run else ''}")
def test_pruned_prefill_reads_the_device_once(checkpoints, family, config):
    """A padded bs-3 prefill: FastAV reads the per-row counts once when it starts, and nothing per layer."""
    inputs, layout = (plain_inputs(3), PLAIN_LAYOUT) if family == "qwen2" else (omni_inputs(3), None)
    model = tiny.load(checkpoints[family])
    unpruned_profiled, unpruned = _local_scalar_dense(model, inputs), _host_reads(model, inputs)
    pruner = fastav.enable(model, config, layout=layout)
    assert _local_scalar_dense(model, inputs) - unpruned_profiled <= 2  # the acceptance bound, as profiled
    # Every kind of host read (tolist, nonzero, boolean indexing, blocking copies too): exactly the one.
    assert _host_reads(model, inputs) - unpruned == 1
    with HostSyncCounter() as reading_stats:
        stats = pruner.stats
    assert reading_stats.host_reads == 1 and len(stats) == 3  # per-modality counts, read when asked for
    if not config.dry_run:
        assert all(s.tokens_per_layer[-1] < s.tokens_per_layer[0] for s in stats)


class _PerForward:
    """Host reads, aten ops and mask builds of each top-level forward call (prefill, then one per decode step)."""

    def __init__(self, model) -> None:
        self.counter = HostSyncCounter()
        self.mask_builds = 0
        self.calls: list[tuple[int, int, int]] = []
        self._start = (0, 0, 0)
        model.register_forward_pre_hook(lambda *_: self._mark())
        model.register_forward_hook(
            lambda *_: self.calls.append(tuple(a - b for a, b in zip(self._now(), self._start, strict=True)))
        )

    def _now(self) -> tuple[int, int, int]:
        return self.counter.host_reads, self.counter.kernels, self.mask_builds

    def _mark(self) -> None:
        self._start = self._now()


def _decode_costs(model, inputs, new_tokens: int, **options) -> list[tuple[int, int, int]]:
    """Per decode step: (host reads, non-view aten ops, mask builds through the model's mask interface)."""
    probe = _PerForward(model)
    name = model.config._attn_implementation
    stock = ALL_MASK_ATTENTION_FUNCTIONS[name]

    def counting(*args, **kwargs):
        probe.mask_builds += 1
        return stock(*args, **kwargs)

    AttentionMaskInterface.register(name, counting)
    try:
        with torch.no_grad(), probe.counter:
            model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0, **options)
    finally:
        AttentionMaskInterface.register(name, stock)
    return probe.calls[1:]


@pytest.mark.parametrize("batch", [1, 3])
def test_decode_steps_cost_what_unpruned_steps_cost(checkpoints, batch):
    """Per decode step FastAV adds no host read and no mask build. With padding (bs 3) it writes the step's key
    column into the pruned layers' mask buffer once (two small kernels) and hands each layer a view; without
    padding or filler (bs 1) it adds no kernel at all."""
    inputs = plain_inputs(batch)
    model = tiny.load(checkpoints["qwen2"])
    unpruned = _decode_costs(model, inputs, new_tokens=80)
    fastav.enable(model, FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.2), layout=PLAIN_LAYOUT)
    pruned = _decode_costs(model, inputs, new_tokens=80)  # past 64 new tokens: the buffer grows once
    assert len(pruned) == len(unpruned) == 79
    extra_ops = []
    for step, (got, want) in enumerate(zip(pruned, unpruned, strict=True)):
        assert got[0] == want[0], f"decode step {step}: {got[0]} host reads, unpruned {want[0]}"
        assert got[2] == want[2] == 1, f"decode step {step}: {got[2]} mask builds"
        extra_ops.append(got[1] - want[1])
    if batch == 1:
        assert extra_ops == [0] * 79
    else:  # the first step also builds the buffer (a few kernels per pruned layer: 4 here); one step grows it
        assert sorted(extra_ops)[:-2] == [2] * 77 and max(extra_ops) <= 4 * 4, extra_ops


def test_static_cache_decode_steps_read_nothing_back(checkpoints):
    """On FastAV's static cache (eager) a step reads no more device values than transformers' own static cache
    unpruned, and its extra work is a fixed handful of kernels per layer (the layer's mask from its valid slots
    and counter, the counters' increments); compiled, those fuse into the step's graph."""
    inputs = plain_inputs(3)
    model = tiny.load(checkpoints["qwen2"])
    unpruned = _decode_costs(model, inputs, new_tokens=20, cache_implementation="static")
    fastav.enable(model, FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.2), layout=PLAIN_LAYOUT)
    pruned = _decode_costs(model, inputs, new_tokens=20, cache_implementation="static")
    assert len(pruned) == len(unpruned) == 19
    layers = model.config.num_hidden_layers
    for step, (got, want) in enumerate(zip(pruned, unpruned, strict=True)):
        assert got[0] == want[0], f"decode step {step}: {got[0]} host reads, unpruned {want[0]}"
        assert got[1] - want[1] <= 6 * layers, f"decode step {step}: {got[1] - want[1]} extra kernels"
    assert len({got[1] for got in pruned}) == 1  # the same work every step: nothing grows or reallocates
