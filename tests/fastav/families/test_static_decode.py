"""Static caches and the compiled decode step, on every multimodal family's tiny checkpoint.

Exactness: the pruned decode on FastAV's static cache, eager and compiled, gives the greedy tokens of the
eager dynamic-cache decode and of the masking reference (tests/fastav/reference.py), logits within 1e-5 at
every step, in fp32, batch 3 with left padding. Compile discipline is read from torch's own counters.

The full family x strategy x backend matrix compiles with dynamo and AOT autograd (`aot_eager`): the graph
that would reach inductor, without a C++ build per case; one case runs inductor itself.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import fastav
from fastav import FastAVConfig, compiled, static_cache
from fastav import testing as tiny
from tests.fastav.families.conftest import SPECS
from tests.fastav.families.test_families import FIRST_PRUNABLE, av_labels, strategy_config
from tests.fastav.reference import MaskedKeyReference
from tests.fastav.test_equivalence import text_config_of

FAMILIES = ["qwen2_5_omni", *FIRST_PRUNABLE]
SLOW = {"qwen3_omni", "qwen3_vl", "qwen2_5_vl"}  # their eager-backend cases
FIRST = {**FIRST_PRUNABLE, "qwen2_5_omni": 2}
STEPS = 64
TOL = 1e-5


def config_for(strategy: str, family: str) -> FastAVConfig:
    return FastAVConfig(strategy="none") if strategy == "none" else strategy_config(strategy, FIRST[family])


def greedy(model, inputs, steps=STEPS, **options):
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, output_logits=True,
            return_dict_in_generate=True, pad_token_id=0, **options,
        )  # fmt: skip


def assert_same_decode(got, want, tol=TOL) -> None:
    assert torch.equal(got.sequences, want.sequences)
    assert len(got.logits) == len(want.logits) == STEPS
    for step_got, step_want in zip(got.logits, want.logits, strict=True):
        torch.testing.assert_close(step_got, step_want, atol=tol, rtol=0)


def reference_decode(path, inputs, config: FastAVConfig, pruner, model):
    if config.strategy == "none":
        return greedy(tiny.load(path, "eager"), inputs)
    reference_model = tiny.load(path, "eager")
    reference = MaskedKeyReference(
        reference_model,
        text_config_of(reference_model),
        av_labels(model, inputs),
        {s.layer: (s.rule, s.fraction) for s in pruner.plan.steps},
        cut=config.global_cut,
        keep_ratio=config.global_keep_ratio,
        seed=config.seed,
        score_queries=config.score_queries,
    )
    reference.set_valid(inputs["attention_mask"])
    return greedy(reference_model, inputs)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles new model instances of the same classes: start from dynamo's empty code cache."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def qwen2_5_omni(omni_checkpoint):
    return omni_checkpoint


# Every family and strategy with sdpa; the eager mask format (additive) on one dense and one MoE family by
# default, on all of them with -m slow.
CASES = [
    pytest.param(family, strategy, backend, marks=[pytest.mark.slow] if backend == "eager" and family in SLOW else [])
    for family in FAMILIES
    for strategy in ("fastav", "gradual", "low_attentive", "none")
    for backend in ("sdpa", "eager")
]


@pytest.mark.parametrize(("family", "strategy", "backend"), CASES)
def test_static_and_compiled_decode_match_dynamic_and_reference(family_batch, family, strategy, backend):
    path, inputs = family_batch(family)
    config = config_for(strategy, family)
    model = tiny.load(path, backend)
    pruner = fastav.enable(model, config)
    dynamic = greedy(model, inputs)
    static = greedy(model, inputs, cache_implementation="static")
    assert static_cache.is_pruned(static.past_key_values)
    engine = compiled.install(pruner, backend="aot_eager")
    counters.clear()
    compiled_out = greedy(model, inputs, cache_implementation="static")
    assert engine.stats.compiled_steps == STEPS - 1 and engine.stats.eager_steps == 0
    assert not counters["graph_break"]

    assert_same_decode(static, dynamic)
    assert_same_decode(compiled_out, dynamic)
    assert_same_decode(dynamic, reference_decode(path, inputs, config, pruner, model))
    if strategy != "none":  # the oracle has teeth: later layers really hold fewer keys
        widths = [layer.prompt_width for layer in compiled_out.past_key_values.layers]
        assert widths[-1] < widths[0]


def test_inductor_compiled_decode_matches_dynamic(family_batch):
    """The production backend: inductor's generated code, not only the traced graph."""
    path, inputs = family_batch("qwen2_5_omni")
    model = tiny.load(path, "sdpa")
    pruner = fastav.enable(model, config_for("fastav", "qwen2_5_omni"))
    dynamic = greedy(model, inputs)
    engine = compiled.install(pruner)  # inductor
    counters.clear()
    assert_same_decode(greedy(model, inputs, cache_implementation="static"), dynamic)
    assert not counters["graph_break"] and len(engine.stats.graphs) == 1


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl_moe"])
def test_one_graph_per_bucket_over_batches_and_steps(family_batch, family):
    """Batches of 3 and 2 rows (bucket 4), 64 steps each, compile once: 0 graph breaks, 1 graph; a 5-row batch
    (bucket 8) is past max_graphs=1 and runs the same code eagerly, with the same results."""
    path, three = family_batch(family)
    two, five = tiny.processed_batch(path, SPECS[:2]), tiny.processed_batch(path, SPECS + SPECS[:2])
    model = tiny.load(path, "sdpa")
    pruner = fastav.enable(model, config_for("fastav", family))
    batches = {"three": three, "two": two, "five": five}
    want = {name: greedy(model, batch) for name, batch in batches.items()}
    engine = compiled.install(pruner, backend="aot_eager", batch_buckets=(4, 8), max_graphs=1)
    counters.clear()
    for name in ("three", "two", "three", "five"):
        assert_same_decode(greedy(model, batches[name], cache_implementation="static"), want[name])
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 1 and len(engine.stats.graphs) == 1
    (key,) = engine.stats.graphs
    assert key[0] == 4
    assert engine.stats.compiled_steps == 3 * (STEPS - 1) and engine.stats.eager_steps == STEPS - 1
