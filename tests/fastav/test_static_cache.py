"""FastAV's static per-layer caches on the text decoders (Qwen2, Llama) and the Qwen2.5-Omni thinker: what they
allocate, the cache a caller makes, the compiled step on plain decoders, and what they refuse."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import StaticCache

import fastav
from fastav import FastAVConfig, UnsupportedModelError, compiled, static_cache
from fastav import testing as tiny
from tests.fastav.test_equivalence import PLAIN_LAYOUT, omni_inputs, plain_inputs

CONFIG = FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.25)
STEPS = 64


def greedy(model, inputs, steps=STEPS, **options):
    with torch.no_grad():
        return model.generate(
            **inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, output_logits=True,
            return_dict_in_generate=True, pad_token_id=0, **options,
        )  # fmt: skip


def assert_same(got, want) -> None:
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.logits, want.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_text_decoders_decode_the_same_on_static_and_compiled_caches(checkpoints, family, backend):
    model = tiny.load(checkpoints[family], backend)
    pruner = fastav.enable(model, CONFIG, layout=PLAIN_LAYOUT)
    inputs = plain_inputs(3)
    want = greedy(model, inputs)
    assert_same(greedy(model, inputs, cache_implementation="static"), want)
    compiled.install(pruner, backend="aot_eager")
    counters.clear()
    assert_same(greedy(model, inputs, cache_implementation="static"), want)
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1


def test_each_layer_allocates_its_kept_width_plus_the_new_tokens(checkpoints):
    """Layers before the first prune hold the whole prompt, later ones their kept tokens; all in buckets."""
    model = tiny.load(checkpoints["omni"])
    pruner = fastav.enable(model, CONFIG)
    pruner.length_bucket = 16
    inputs = omni_inputs(3)
    out = greedy(model, inputs, steps=8, cache_implementation="static")
    layers = out.past_key_values.layers
    prompt = inputs["input_ids"].shape[1]
    widths = [layer.prompt_width for layer in layers]
    assert widths[:2] == [prompt, prompt] and widths[2] < prompt and widths[-1] < widths[2]
    # room for the new tokens generate() sized its StaticCache for, rounded up to the bucket
    assert [layer.max_cache_len for layer in layers] == [static_cache.round_up(w + 8, 16) for w in widths]
    unpruned = fastav.enable(tiny.load(checkpoints["omni"]), FastAVConfig(strategy="none"))
    unpruned.length_bucket = 16
    full = greedy(unpruned.adapter.top, inputs, steps=8, cache_implementation="static").past_key_values
    assert static_cache.allocated_bytes(out.past_key_values) < 0.8 * static_cache.allocated_bytes(full)
    stats = pruner.stats[0]
    dims = pruner.dims
    assert stats.kv_cache_bytes == sum(stats.tokens_per_layer) * 2 * dims.kv_heads * dims.head_dim * 4
    assert (
        stats.kv_cache_bytes_unpruned
        == stats.tokens_per_layer[0] * dims.num_layers * 2 * dims.kv_heads * dims.head_dim * 4
    )


def test_a_cache_the_caller_makes_decodes_like_generates_own(checkpoints):
    model = tiny.load(checkpoints["omni"])
    fastav.enable(model, CONFIG)
    inputs = omni_inputs(3)
    want = greedy(model, inputs, steps=12)
    cache = static_cache.PrunedStaticCache(model.config, new_tokens=12)
    assert_same(greedy(model, inputs, steps=12, past_key_values=cache), want)
    assert static_cache.decoding(cache)


def test_padding_mask_is_read_back_from_generates_prepared_masks():
    valid = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    causal = torch.ones(4, 6, dtype=torch.bool).tril()
    prepared = causal[None, None] & torch.cat([valid, torch.zeros(2, 2, dtype=torch.bool)], 1)[:, None, None, :]
    assert torch.equal(static_cache.padding_mask(prepared, 4), valid)
    additive = torch.zeros(prepared.shape).masked_fill(~prepared, torch.finfo(torch.float32).min)
    assert torch.equal(static_cache.padding_mask({"full_attention": additive}, 4), valid)
    assert static_cache.padding_mask(None, 4) is None


def test_a_static_cache_fastav_did_not_prefill_is_refused(checkpoints):
    model = tiny.load(checkpoints["qwen2"])
    inputs = plain_inputs(2)
    cache = StaticCache(model.config, max_cache_len=256)
    with torch.no_grad():
        model(**inputs, past_key_values=cache, use_cache=True)  # filled without FastAV
        fastav.enable(model, CONFIG, layout=PLAIN_LAYOUT)
        with pytest.raises(RuntimeError, match="static cache that FastAV did not prefill"):
            model(input_ids=inputs["input_ids"][:, -1:], past_key_values=cache, use_cache=True)


def test_several_tokens_per_step_are_refused(checkpoints):
    model = tiny.load(checkpoints["qwen2"])
    fastav.enable(model, CONFIG, layout=PLAIN_LAYOUT)
    inputs = plain_inputs(2)
    cache = static_cache.PrunedStaticCache(model.config, new_tokens=8)
    with torch.no_grad():
        model(**inputs, past_key_values=cache, use_cache=True)
        with pytest.raises(UnsupportedModelError, match="one token per step"):
            model(input_ids=inputs["input_ids"][:, -2:], past_key_values=cache, use_cache=True)


def test_paused_pruner_leaves_transformers_static_cache_alone(checkpoints):
    """A shadow (unpruned) generate through the same model on a static cache is transformers' own decode."""
    model = tiny.load(checkpoints["qwen2"])
    inputs = plain_inputs(3)
    want = greedy(model, inputs, steps=8)
    pruner = fastav.enable(model, CONFIG, layout=PLAIN_LAYOUT)
    with pruner.paused():
        out = greedy(model, inputs, steps=8, cache_implementation="static")
    assert not static_cache.is_pruned(out.past_key_values)
    assert_same(out, want)
