"""GPU oracles (run with `pytest -m gpu` on a CUDA machine; CI has none).

- fp32 on CUDA: the pruned model equals the masking reference, as on the CPU (<= 1e-4).
- bf16: near-tied scores legitimately flip keep decisions against any other implementation, so the reference
  replays the keep sets the pruned run recorded (tests/fastav/test_equivalence.py).
- the varlen encoder backend's real kernel matches sdpa within bf16 tolerance.
- no host synchronisations per layer or per decode step, counted by CUDA's own sync debug mode.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import fastav
from fastav import FastAVConfig, varlen
from fastav import testing as tiny
from tests.fastav.test_equivalence import (
    PLAIN_LAYOUT,
    STRATEGIES,
    check_against_reference,
    check_replayed_keep_sets,
    omni_inputs,
    plain_inputs,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    """TF32 would round fp32 matmuls to 10 mantissa bits; the fp32 oracles compare at 1e-4."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("config", STRATEGIES, ids=lambda c: f"{c.strategy}-{c.global_cut or c.global_keep_ratio}")
def test_fp32_on_cuda_matches_masked_key_reference(checkpoints, config, batch):
    check_against_reference(
        checkpoints["qwen2"], plain_inputs(batch), config, layout=PLAIN_LAYOUT, device="cuda", tol=1e-4, score_tol=1e-5
    )


@pytest.mark.parametrize("strategy", ["fastav", "low_attentive"])
def test_fp32_omni_thinker_on_cuda_matches_masked_key_reference(checkpoints, strategy):
    config = FastAVConfig(strategy=strategy, global_layer=2, global_keep_ratio=0.4, fine_ratio=0.25)
    check_against_reference(checkpoints["omni"], omni_inputs(3), config, device="cuda", tol=1e-4, score_tol=1e-5)


@pytest.mark.parametrize("family", ["qwen2", "omni"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_reference_replaying_keep_sets(checkpoints, family, dtype):
    inputs, layout = (plain_inputs(3), PLAIN_LAYOUT) if family == "qwen2" else (omni_inputs(3), None)
    config = FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.25)
    check_replayed_keep_sets(checkpoints[family], inputs, config, layout=layout, device="cuda", dtype=dtype)


def _towers(model, inputs):
    with torch.no_grad():
        video = torch.cat(
            model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
        )
        audio = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).last_hidden_state
    return video.float(), audio.float()


def test_varlen_kernel_matches_sdpa_in_bf16(tmp_path):
    """Towers with real head sizes (64) and realistic packing: many vision windows, several audio chunks."""
    assert varlen.kernel_available("cuda", torch.bfloat16), "torch.nn.attention.varlen is missing from this PyTorch"
    path = tiny.save_omni_thinker(tmp_path / "omni", encoder_width=128)
    model = tiny.load(path, "sdpa").to("cuda", torch.bfloat16)
    inputs = tiny.omni_inputs([(5, 8, 1200, 6), (3, 4, 800, 4)], grid=(8, 16))
    inputs = {
        k: (v.cuda().to(torch.bfloat16) if v.is_floating_point() else v.cuda()) if torch.is_tensor(v) else v
        for k, v in inputs.items()
    }
    want = _towers(model, inputs)
    varlen.use_for_encoders(model)
    got = _towers(model, inputs)
    for g, w in zip(got, want, strict=True):
        scale = w.abs().max()
        assert (g - w).abs().max() <= 0.02 * scale, f"{(g - w).abs().max():.4f} vs scale {scale:.4f}"


def _sync_warnings(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_pruned_prefill_synchronizes_once_more_than_unpruned(checkpoints):
    inputs = {k: v.cuda() for k, v in plain_inputs(3).items()}
    model = tiny.load(checkpoints["qwen2"]).cuda()

    def prefill():
        with torch.no_grad():
            model(**inputs)

    prefill()
    unpruned = _sync_warnings(prefill)
    fastav.enable(model, FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.2), layout=PLAIN_LAYOUT)
    prefill()
    assert _sync_warnings(prefill) - unpruned == 1  # the per-row counts, read once at prefill start


def test_decode_synchronizes_as_often_as_unpruned(checkpoints):
    inputs = {k: v.cuda() for k, v in plain_inputs(3).items()}
    model = tiny.load(checkpoints["qwen2"]).cuda()

    def run(steps):
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=steps, do_sample=False, pad_token_id=0)

    def per_step():
        return _sync_warnings(lambda: run(17)) - _sync_warnings(lambda: run(1))

    run(3)
    unpruned = per_step()
    fastav.enable(model, FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.2), layout=PLAIN_LAYOUT)
    run(3)
    assert per_step() == unpruned


@pytest.mark.parametrize("family", ["qwen2", "omni"])
def test_compiled_decode_with_cuda_graphs_matches_the_dynamic_decode(checkpoints, family):
    """Inductor with CUDA graphs (reduce-overhead) on FastAV's static caches, fp32: the dynamic decode's tokens and
    logits (1e-4) for a padded batch of 3, and again for a batch of 2 in the same bucket without a new graph."""
    from fastav import compiled

    torch._dynamo.reset()
    model = tiny.load(checkpoints[family]).to("cuda")
    layout = PLAIN_LAYOUT if family == "qwen2" else None
    pruner = fastav.enable(model, FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.25), layout=layout)
    inputs = plain_inputs(3) if family == "qwen2" else omni_inputs(3)
    batches = [{k: v.to("cuda") for k, v in inputs.items()}]
    if family == "qwen2":
        batches.append({k: v[:2] for k, v in batches[0].items()})
    options = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0, output_logits=True,
                   return_dict_in_generate=True)  # fmt: skip
    with torch.no_grad():
        want = [model.generate(**batch, **options) for batch in batches]
        engine = compiled.install(pruner)
        assert engine.mode == "reduce-overhead"
        got = [model.generate(**b, **options, cache_implementation="static", disable_compile=True) for b in batches]
    for out, ref in zip(got, want, strict=True):
        assert torch.equal(out.sequences, ref.sequences)
        for a, b in zip(out.logits, ref.logits, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert len(engine.stats.graphs) == 1 and engine.stats.eager_steps == 0
