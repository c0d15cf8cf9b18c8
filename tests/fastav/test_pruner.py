"""Identity, batching, lifecycle and refusal behaviour of fastav.enable / the Pruner."""

from __future__ import annotations

import pytest
import torch

import fastav
from fastav import FastAVConfig, Modality, SpanLayout, TokenIdLayout, UnsupportedModelError
from fastav import testing as tiny
from tests.fastav.test_equivalence import PLAIN_LAYOUT, omni_inputs, plain_inputs


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("family", ["qwen2", "omni"])
def test_strategy_none_is_identical_to_unmodified_model(checkpoints, family):
    inputs = plain_inputs(3) if family == "qwen2" else omni_inputs(3)
    model = tiny.load(checkpoints[family])
    before = logits(model, inputs)
    pruner = fastav.enable(model, FastAVConfig(strategy="none"), layout=PLAIN_LAYOUT if family == "qwen2" else None)
    assert torch.equal(logits(model, inputs), before)
    stats = pruner.stats
    assert [s.strategy for s in stats] == ["none"] * 3
    assert all(s.flops_ratio == 1.0 and len(set(s.tokens_per_layer)) == 1 for s in stats)


def test_fastav_with_nothing_to_prune_is_identical(checkpoints):
    """Text-only inputs: every step runs (gather, cos/sin, masks) and must change nothing."""
    ids, mask = tiny.left_pad([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15]])
    inputs = {"input_ids": ids, "attention_mask": mask}
    model = tiny.load(checkpoints["qwen2"])
    before = logits(model, inputs)
    generated_before = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=0)
    pruner = fastav.enable(model, FastAVConfig(global_layer=1), layout=PLAIN_LAYOUT)
    torch.testing.assert_close(logits(model, inputs), before, atol=0, rtol=0)
    assert torch.equal(model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=0), generated_before)
    assert pruner.stats[0].tokens_per_layer == [7] * 6


@pytest.mark.parametrize("family", ["qwen2", "omni"])
def test_each_batch_row_equals_that_sample_alone(checkpoints, family):
    config = FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.25)
    model = tiny.load(checkpoints[family])
    pruner = fastav.enable(model, config, layout=PLAIN_LAYOUT if family == "qwen2" else None)
    if family == "qwen2":
        rows = tiny.text_av_rows([(4, 24, 40, 6), (2, 16, 30, 3), (6, 30, 12, 5)])
        ids, mask = tiny.left_pad(rows)
        batch = {"input_ids": ids, "attention_mask": mask}
        singles = [dict(zip(("input_ids", "attention_mask"), tiny.left_pad([r]), strict=True)) for r in rows]
    else:
        specs = [(5, 4, 400, 6), (3, 2, 300, 4), (7, 6, 200, 3)]
        batch = tiny.omni_inputs(specs)
        # Same random features as in the batch: build each single from the batch's own tensors.
        singles = [_omni_row(batch, specs, i) for i in range(len(specs))]
    batch_out = model.generate(**batch, max_new_tokens=5, do_sample=False, pad_token_id=0)
    batch_stats = pruner.stats
    batch_last = logits(model, batch)[:, -1]
    for i, single in enumerate(singles):
        alone = model.generate(**single, max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert torch.equal(alone[0, -5:], batch_out[i, -5:])
        torch.testing.assert_close(logits(model, single)[0, -1], batch_last[i], atol=1e-5, rtol=0)
        assert pruner.stats[0].tokens_per_layer == batch_stats[i].tokens_per_layer


def _omni_row(batch, specs, i):
    mask = batch["attention_mask"][i].bool()
    frames = int(batch["feature_attention_mask"][i].sum())
    patches = [t * 16 for t, _, _ in batch["video_grid_thw"].tolist()]
    start = sum(patches[:i])
    return dict(
        input_ids=batch["input_ids"][i][mask][None],
        attention_mask=torch.ones(1, int(mask.sum()), dtype=torch.long),
        input_features=batch["input_features"][i : i + 1, :, :frames],
        feature_attention_mask=torch.ones(1, frames, dtype=torch.long),
        pixel_values_videos=batch["pixel_values_videos"][start : start + patches[i]],
        video_grid_thw=batch["video_grid_thw"][i : i + 1],
        video_second_per_grid=batch["video_second_per_grid"][i : i + 1],
        use_audio_in_video=True,
    )


def test_disable_restores_bit_identical_outputs(checkpoints):
    inputs = omni_inputs(3)
    model = tiny.load(checkpoints["omni"])
    before = logits(model, inputs)
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=0)
    backend = model.model.language_model.config._attn_implementation
    fastav.enable(model, FastAVConfig(global_layer=2))
    assert not torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=0), generated)
    fastav.disable(model)
    assert model.model.language_model.config._attn_implementation == backend
    assert torch.equal(logits(model, inputs), before)
    assert torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=0), generated)
    assert fastav.pruner_of(model) is None


def test_enable_twice_is_refused(checkpoints):
    model = tiny.load(checkpoints["qwen2"])
    fastav.enable(model, layout=PLAIN_LAYOUT)
    with pytest.raises(RuntimeError, match="already enabled"):
        fastav.enable(model, layout=PLAIN_LAYOUT)


def test_unsupported_model_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(UnsupportedModelError, match=r"GPT2LMHeadModel.*supported classes"):
        fastav.enable(model)


def test_subclass_of_a_supported_class_is_accepted(checkpoints):
    """VideoLLaMA2-AV ships its own Qwen2ForCausalLM subclass; it must resolve to the Qwen2 family."""
    from transformers import Qwen2ForCausalLM

    class VideoLLaMA2Qwen2ForCausalLM(Qwen2ForCausalLM):
        pass

    model = VideoLLaMA2Qwen2ForCausalLM.from_pretrained(checkpoints["qwen2"], attn_implementation="sdpa").eval()
    pruner = fastav.enable(model, preset="videollama2-av", config=FastAVConfig(global_layer=2, global_cut=20))
    assert pruner.adapter.family == "qwen2"
    with torch.no_grad():
        model(inputs_embeds=torch.randn(1, 50, 64))
    assert pruner.stats[0].input_tokens == {"text": 14, "video": 36, "audio": 0, "image": 0}
    # positions 14..19 are before the cut, and the last token (here a video one) is never pruned
    assert pruner.stats[0].after_global["video"] == 7


def test_unsupported_attention_backend_is_refused(checkpoints):
    model = tiny.load(checkpoints["qwen2"], attn="flex_attention")
    with pytest.raises(UnsupportedModelError, match="flex_attention"):
        fastav.enable(model, layout=PLAIN_LAYOUT)


def test_layer_beyond_model_is_refused_naming_the_field(checkpoints):
    model = tiny.load(checkpoints["qwen2"])
    with pytest.raises(ValueError, match=r"FastAVConfig.global_layer=6 .*6 decoder layers"):
        fastav.enable(model, FastAVConfig(global_layer=6), layout=PLAIN_LAYOUT)
    with pytest.raises(ValueError, match=r"FastAVConfig.fastv_layer=9"):
        fastav.enable(model, FastAVConfig(strategy="fastv", fastv_layer=9), layout=PLAIN_LAYOUT)
    assert fastav.pruner_of(model) is None


def test_right_padding_is_refused(checkpoints):
    model = tiny.load(checkpoints["qwen2"])
    fastav.enable(model, layout=PLAIN_LAYOUT)
    ids = torch.tensor([[5, 6, 7, 0]])
    with pytest.raises(ValueError, match="left padding"):
        logits(model, {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0]])})


def test_inputs_embeds_need_a_span_layout_or_labels(checkpoints):
    model = tiny.load(checkpoints["qwen2"])
    embeds = torch.randn(1, 40, 64)
    fastav.enable(model, FastAVConfig(global_layer=2), layout=PLAIN_LAYOUT)
    with pytest.raises(ValueError, match="inputs_embeds only"):
        logits(model, {"inputs_embeds": embeds})
    fastav.disable(model)

    pruner = fastav.enable(model, FastAVConfig(global_layer=2), layout=SpanLayout(((Modality.VIDEO, 4, 34),)))
    logits(model, {"inputs_embeds": embeds})
    assert pruner.stats[0].input_tokens == {"text": 10, "video": 30, "audio": 0, "image": 0}
    assert pruner.stats[0].after_global["video"] == 10

    labels = torch.full((1, 40), int(Modality.TEXT))
    labels[0, 2:22] = int(Modality.AUDIO)
    pruner.set_modalities(labels)
    logits(model, {"inputs_embeds": embeds})
    assert pruner.stats[0].input_tokens["audio"] == 20 and pruner.stats[0].input_tokens["video"] == 0


def test_stats_count_modalities_and_flops(checkpoints):
    model = tiny.load(checkpoints["qwen2"])
    layout = TokenIdLayout(video_ids=frozenset({tiny.VIDEO_ID}), audio_ids=frozenset({tiny.AUDIO_ID}))
    pruner = fastav.enable(model, FastAVConfig(global_layer=3, global_cut=30, fine_ratio=0.5), layout=layout)
    logits(model, plain_inputs(1))  # row: 4 text, 24 video, 40 audio, 6 text
    (stats,) = pruner.stats
    assert stats.input_tokens == {"text": 10, "video": 24, "audio": 40, "image": 0}
    # positions 4..29 are the AV tokens before the cut: 24 video + 2 audio.
    assert stats.after_global == {"text": 10, "video": 24, "audio": 2, "image": 0}
    assert stats.av_tokens_per_layer == [64, 64, 64, 26, 13, 7]
    assert stats.tokens_per_layer == [74, 74, 74, 36, 23, 17]
    assert stats.flops_pruned < stats.flops_unpruned and 0 < stats.flops_ratio < 1
    assert stats.settings["global_cut"] == 30 and stats.to_dict()["strategy"] == "fastav"


def test_multi_token_decode_on_pruned_caches_is_refused(checkpoints):
    """The decode masks add one column per step; a chunk of new tokens would need a causal block among them."""
    model = tiny.load(checkpoints["qwen2"])
    fastav.enable(model, FastAVConfig(global_layer=2), layout=PLAIN_LAYOUT)
    inputs = plain_inputs(1)
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        with pytest.raises(fastav.UnsupportedModelError, match="one token per step"):
            model(input_ids=inputs["input_ids"][:, :2], past_key_values=out.past_key_values)


def test_paused_runs_the_model_unpruned_and_keeps_the_last_stats(checkpoints):
    """The shadow baseline: inside `paused()` the model is the unmodified model, bit for bit, and the stats of
    the last pruned prefill stay readable."""
    inputs = plain_inputs(3)
    plain = tiny.load(checkpoints["qwen2"])
    model = tiny.load(checkpoints["qwen2"])
    pruner = fastav.enable(model, FastAVConfig(global_layer=2, global_keep_ratio=0.2), layout=PLAIN_LAYOUT)
    with torch.no_grad():
        pruned = model(**inputs).logits[:, -1]
        stats = [s.tokens_per_layer for s in pruner.stats]
        with pruner.paused():
            shadow = model(**inputs).logits[:, -1]
            shadow_generate = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0)
        want = plain(**inputs).logits[:, -1]
        assert torch.equal(shadow, want) and not torch.equal(pruned, want)
        assert torch.equal(shadow_generate, plain.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0))
        assert [s.tokens_per_layer for s in pruner.stats] == stats
        assert torch.equal(model(**inputs).logits[:, -1], pruned)  # pruning resumes after the block
