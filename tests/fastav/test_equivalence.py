"""Exact-equivalence oracles: the pruned model against an eager reference that masks the dropped keys."""

from __future__ import annotations

import pytest
import torch

import fastav
from fastav import FastAVConfig, Modality, TokenIdLayout
from fastav import testing as tiny
from fastav.presets import spans_of
from tests.fastav.reference import MaskedKeyReference

TOL = 1e-5
DECODE_STEPS = 6
PLAIN_LAYOUT = TokenIdLayout(video_ids=frozenset({tiny.VIDEO_ID}), audio_ids=frozenset({tiny.AUDIO_ID}))


def plain_inputs(batch: int) -> dict[str, torch.Tensor]:
    lengths = [(4, 24, 40, 6), (2, 16, 30, 3), (6, 30, 12, 5)][:batch]
    ids, mask = tiny.left_pad(tiny.text_av_rows(lengths))
    return {"input_ids": ids, "attention_mask": mask}


def omni_inputs(batch: int) -> dict[str, torch.Tensor]:
    return tiny.omni_inputs([(5, 4, 400, 6), (3, 2, 300, 4), (7, 6, 200, 3)][:batch])


def text_config_of(model):
    return model.model.language_model.config if hasattr(model.model, "language_model") else model.config


def av_labels(inputs) -> torch.Tensor:
    av = torch.isin(inputs["input_ids"], torch.tensor([tiny.VIDEO_ID, tiny.AUDIO_ID]))
    return av & inputs["attention_mask"].bool()


def generate(model, inputs, steps=DECODE_STEPS):
    return model.generate(
        **inputs,
        max_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )


def check_against_reference(
    path,
    inputs,
    config: FastAVConfig,
    layout=None,
    backend="sdpa",
    av=None,
    steps=DECODE_STEPS,
    device="cpu",
    tol=TOL,
    score_tol=1e-6,
):
    """The pruned model equals the masking reference: last-position logits, recorded scores, and every decode
    step. Runs on `device` (the GPU suite runs it on CUDA in fp32)."""
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    pruned = tiny.load(path, backend).to(device)
    pruner = fastav.enable(pruned, config, layout=layout if layout is not None else None)
    reference_model = tiny.load(path, "eager").to(device)
    reference = MaskedKeyReference(
        reference_model,
        text_config_of(reference_model),
        (av_labels(inputs) if av is None else av).to(device),
        {s.layer: (s.rule, s.fraction) for s in pruner.plan.steps},
        cut=config.global_cut,
        keep_ratio=config.global_keep_ratio,
        seed=config.seed,
        score_queries=config.score_queries,
    )
    unpruned = tiny.load(path, backend).to(device)

    with torch.no_grad():
        reference.set_valid(inputs["attention_mask"])
        want = reference_model(**inputs).logits[:, -1]
        got = pruned(**inputs).logits[:, -1]
        base = unpruned(**inputs).logits[:, -1]
    torch.testing.assert_close(got, want, atol=tol, rtol=0)
    # The oracle has teeth: pruning changed the answer distribution, and tokens really were removed.
    assert (got - base).abs().max() > 1e-3
    assert all(s.tokens_per_layer[-1] < s.tokens_per_layer[0] for s in pruner.stats)

    # Scores the pruner recorded equal the reference's eager weights at the surviving positions.
    for layer, scores in pruner.scores.items():
        positions, valid = pruner.layer_positions[layer], pruner.layer_valid[layer]
        expected = reference.scores[layer].gather(-1, positions)
        torch.testing.assert_close(scores[valid], expected[valid], atol=score_tol, rtol=0)

    reference.set_valid(inputs["attention_mask"])
    out_ref = generate(reference_model, inputs, steps)
    out = generate(pruned, inputs, steps)
    assert torch.equal(out.sequences, out_ref.sequences)
    assert len(out.logits) == steps
    for step_got, step_want in zip(out.logits, out_ref.logits, strict=True):
        torch.testing.assert_close(step_got, step_want, atol=tol, rtol=0)
    return pruner


STRATEGIES = [
    FastAVConfig(strategy="fastav", global_layer=2, global_keep_ratio=0.4, fine_ratio=0.2),
    FastAVConfig(strategy="fastav", global_layer=3, global_cut=30, fine_ratio=0.3),
    FastAVConfig(strategy="fastv", fastv_layer=2, fastv_ratio=0.5),
    FastAVConfig(strategy="random", global_layer=2, global_keep_ratio=0.5, seed=7),
    FastAVConfig(strategy="low_attentive", global_layer=2, global_keep_ratio=0.5),
    # query-aware scores: the mean over the last few alive tokens' attention rows
    FastAVConfig(strategy="low_attentive", global_layer=2, global_keep_ratio=0.45, score_queries=6),
    FastAVConfig(strategy="fastv", fastv_layer=2, fastv_ratio=0.5, score_queries=3),
    FastAVConfig(strategy="gradual", gradual_start=1, gradual_keep=0.3),
    FastAVConfig(strategy="gradual", gradual_start=2, gradual_keep=0.5, score_queries=4),
]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "config", STRATEGIES, ids=lambda c: f"{c.strategy}-{c.global_cut or c.global_keep_ratio}-q{c.score_queries}"
)
def test_qwen2_matches_masked_key_reference(checkpoints, config, batch):
    check_against_reference(checkpoints["qwen2"], plain_inputs(batch), config, layout=PLAIN_LAYOUT)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("strategy", ["fastav", "low_attentive", "gradual"])
def test_omni_thinker_matches_masked_key_reference(checkpoints, strategy, batch):
    config = FastAVConfig(strategy=strategy, global_layer=2, global_keep_ratio=0.4, fine_ratio=0.25, gradual_keep=0.3)
    pruner = check_against_reference(checkpoints["omni"], omni_inputs(batch), config)
    # Audio-in-video interleaving: both modalities were present and counted from the token ids.
    assert all(s.input_tokens["video"] > 0 and s.input_tokens["audio"] > 0 for s in pruner.stats)


@pytest.mark.parametrize("strategy", ["fastav", "gradual"])
def test_llama_matches_masked_key_reference(checkpoints, strategy):
    config = FastAVConfig(strategy=strategy, global_layer=2, global_keep_ratio=0.5, fine_ratio=0.2, gradual_keep=0.4)
    check_against_reference(checkpoints["llama"], plain_inputs(3), config, layout=PLAIN_LAYOUT)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_long_generation_matches_masked_key_reference(checkpoints, backend):
    """Past the decode mask buffer's first 64 columns (it grows), in both mask formats (bool and additive)."""
    config = FastAVConfig(global_layer=2, global_keep_ratio=0.5, fine_ratio=0.2)
    inputs = plain_inputs(3)
    check_against_reference(checkpoints["qwen2"], inputs, config, layout=PLAIN_LAYOUT, backend=backend, steps=70)


def test_batch_one_needs_no_masks_after_pruning(checkpoints):
    """No padding and no filler: the pruned layers run sdpa's is_causal path (no mask), prefill and decode."""
    model = tiny.load(checkpoints["qwen2"])
    pruner = fastav.enable(model, FastAVConfig(global_layer=2, global_keep_ratio=0.4), layout=PLAIN_LAYOUT)
    seen = []
    for layer in model.model.layers:
        layer.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["attention_mask"]), with_kwargs=True)
    generate(model, plain_inputs(1), steps=3)
    assert len(seen) == 6 * 3 and all(mask is None for mask in seen)
    assert pruner.stats[0].tokens_per_layer[-1] < pruner.stats[0].tokens_per_layer[0]
    check_against_reference(checkpoints["qwen2"], plain_inputs(1), FastAVConfig(global_layer=2), layout=PLAIN_LAYOUT)


def test_span_preset_over_qwen2_with_inputs_embeds(checkpoints):
    """VideoLLaMA2-AV style: a Qwen2 decoder fed inputs_embeds, AV spans counted from the first real token."""
    segments = ((Modality.TEXT, 3), (Modality.VIDEO, 20), (Modality.AUDIO, 36), (Modality.TEXT, 5))
    layout = spans_of(segments)
    lengths = [64, 60, 62]  # shorter rows lose question tokens at the end, and are left padded
    embeds = torch.zeros(3, 64, 64)
    mask = torch.zeros(3, 64, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for row, n in enumerate(lengths):
        embeds[row, 64 - n :] = torch.randn(n, 64, generator=g)
        mask[row, 64 - n :] = 1
    inputs = {"inputs_embeds": embeds, "attention_mask": mask}
    av = layout.labels(None, mask) >= int(Modality.VIDEO)
    config = FastAVConfig(global_layer=2, global_cut=30, fine_ratio=0.25)
    pruner = check_against_reference(checkpoints["qwen2"], inputs, config, layout=layout, av=av)
    assert [s.input_tokens["video"] for s in pruner.stats] == [20, 20, 20]
    assert [s.after_global["audio"] for s in pruner.stats] == [7, 7, 7]


class _ForceTokens:
    """LogitsProcessor that makes generate() follow a given sequence (its raw logits are still reported)."""

    def __init__(self, sequences: torch.Tensor, prompt_len: int) -> None:
        self.sequences, self.prompt_len = sequences, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        forced = self.sequences[:, input_ids.shape[1]]
        return torch.full_like(scores, float("-inf")).scatter_(1, forced[:, None], 0.0)


def check_replayed_keep_sets(path, inputs, config: FastAVConfig, layout=None, device="cpu", dtype=torch.bfloat16):
    """Low precision: near-tied scores legitimately flip keep decisions between two implementations, so the
    reference replays the keep sets the pruned run recorded and follows its generated tokens; then the logits
    of every step agree within rounding noise, far closer than pruned and unpruned are to each other."""
    inputs = {
        k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if isinstance(v, torch.Tensor) else v
        for k, v in inputs.items()
    }
    pruned = tiny.load(path, "sdpa").to(device, dtype)
    pruner = fastav.enable(pruned, config, layout=layout)
    out = generate(pruned, inputs)
    prompt_len = inputs["attention_mask"].shape[1]
    replay = MaskedKeyReference.recorded(pruner, (inputs["attention_mask"].shape[0], prompt_len))
    reference_model = tiny.load(path, "eager").to(device, dtype)
    reference = MaskedKeyReference(
        reference_model,
        text_config_of(reference_model),
        (av_labels(inputs)).to(device),
        {s.layer: (s.rule, s.fraction) for s in pruner.plan.steps},
        replay=replay,
    )
    reference.set_valid(inputs["attention_mask"])
    from transformers import LogitsProcessorList

    out_ref = reference_model.generate(
        **inputs,
        max_new_tokens=DECODE_STEPS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
        logits_processor=LogitsProcessorList([_ForceTokens(out.sequences, prompt_len)]),
    )
    assert torch.equal(out_ref.sequences, out.sequences)
    unpruned = tiny.load(path, "sdpa").to(device, dtype)
    with torch.no_grad():
        base = unpruned(**inputs).logits[:, -1].float()
    got, want = torch.stack(out.logits).float(), torch.stack(out_ref.logits).float()
    gap = (got[0] - base).abs().max()
    noise = (got - want).abs().max()
    assert noise < 0.1 * gap, f"pruned vs replayed reference {noise:.4f}, pruned vs unpruned {gap:.4f}"
    torch.testing.assert_close(got, want, atol=0.02, rtol=0.02)
    return pruner


@pytest.mark.parametrize("family", ["qwen2", "omni"])
def test_bf16_matches_the_reference_replaying_its_keep_sets(checkpoints, family):
    inputs, layout = (plain_inputs(3), PLAIN_LAYOUT) if family == "qwen2" else (omni_inputs(3), None)
    config = FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.25)
    check_replayed_keep_sets(checkpoints[family], inputs, config, layout=layout)
