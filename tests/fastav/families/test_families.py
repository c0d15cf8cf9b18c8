"""Per-family library tests: Qwen3-Omni (thinker and full model), Qwen3-VL (dense and MoE) and Qwen2.5-VL.

Every batch is built by the checkpoint's own processor (`fastav.testing.processed_batch`, as the pipeline builds
one): three left-padded rows with different frame counts, frame sizes and prompt lengths, audio for the Omni
family. Exactness is the masked-key oracle of tests/fastav/test_equivalence.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
import torch
import transformers

import fastav
from fastav import FastAVConfig, Modality, UnsupportedModelError
from fastav import testing as tiny
from fastav.families import FAMILIES, for_checkpoint, supported_classes
from fastav.flops import ModelDims, layer_flops
from fastav.testing import qwen3_omni as omni
from fastav.testing import vl
from tests.fastav.reference import MaskedKeyReference
from tests.fastav.test_equivalence import check_against_reference, generate, text_config_of

MULTIMODAL = ["qwen3_omni", "qwen3_vl", "qwen3_vl_moe", "qwen2_5_vl"]
DEEPSTACK = {"qwen3_omni": omni.DEEPSTACK_LAYERS, "qwen3_vl": vl.DEEPSTACK_LAYERS, "qwen3_vl_moe": vl.DEEPSTACK_LAYERS}
FIRST_PRUNABLE = {**DEEPSTACK, "qwen2_5_vl": 1}
STEPS = 32


def av_labels(model, inputs) -> torch.Tensor:
    """Where the family's own layout says a token may be pruned (any AV modality, padding excluded)."""
    labels = fastav.resolve(model).default_layout.labels(inputs["input_ids"], inputs["attention_mask"])
    return (labels >= int(Modality.VIDEO)) & inputs["attention_mask"].bool()


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def strategy_config(strategy: str, first: int) -> FastAVConfig:
    return {
        "fastav": FastAVConfig(strategy="fastav", global_layer=first, global_keep_ratio=0.4, fine_ratio=0.25),
        "gradual": FastAVConfig(strategy="gradual", gradual_start=first, gradual_keep=0.3),
        "low_attentive": FastAVConfig(
            strategy="low_attentive", global_layer=first + 1, global_keep_ratio=0.4, fine_ratio=0.25
        ),
    }[strategy]


# ------------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("strategy", ["fastav", "gradual", "low_attentive"])
@pytest.mark.parametrize("family", MULTIMODAL)
def test_pruned_family_matches_masked_key_reference(family_batch, family, strategy, backend):
    path, inputs = family_batch(family)
    av = av_labels(tiny.load(path), inputs)
    config = strategy_config(strategy, FIRST_PRUNABLE[family])
    pruner = check_against_reference(path, inputs, config, backend=backend, av=av, steps=STEPS)
    assert pruner.plan.first_prune_layer == FIRST_PRUNABLE[family] + (strategy == "low_attentive")
    for stats, row_av in zip(pruner.stats, av, strict=True):
        assert stats.av_tokens_per_layer[0] == int(row_av.sum())
        assert stats.av_tokens_per_layer[-1] < stats.av_tokens_per_layer[0]
        assert stats.final_tokens["text"] == stats.input_tokens["text"]


# ------------------------------------------------------------------------------------------------ deepstack
def record_deepstack(model) -> list[tuple[tuple, tuple, torch.Tensor]]:
    """Wrap the text model's `_deepstack_process` on this instance: (hidden shape, mask shape, output) per call."""
    text = fastav.resolve(model).text_model
    original, calls = text._deepstack_process, []

    def wrapped(hidden_states, visual_pos_masks, visual_embeds):
        out = original(hidden_states, visual_pos_masks, visual_embeds)
        calls.append((tuple(hidden_states.shape[:2]), tuple(visual_pos_masks.shape), out.detach().clone()))
        return out

    text._deepstack_process = wrapped
    return calls


@pytest.mark.parametrize(
    "config",
    [FastAVConfig(strategy="gradual"), FastAVConfig(global_layer=2, global_keep_ratio=0.3, fine_ratio=0.25)],
    ids=["gradual-default", "fastav-at-first-prunable"],
)
@pytest.mark.parametrize("family", list(DEEPSTACK))
def test_deepstack_rows_get_their_features_unpruned(family_batch, family, config):
    path, inputs = family_batch(family)
    k = DEEPSTACK[family]
    unpruned, pruned = tiny.load(path), tiny.load(path)
    want, got = record_deepstack(unpruned), record_deepstack(pruned)
    pruner = fastav.enable(pruned, config)
    assert pruner.plan.first_prune_layer == k
    base, out = logits(unpruned, inputs), logits(pruned, inputs)

    full = tuple(inputs["input_ids"].shape)
    assert len(want) == len(got) == k
    for (hidden_shape, mask_shape, features), (hidden_want, mask_want, features_want) in zip(got, want, strict=True):
        assert hidden_shape == mask_shape == hidden_want == mask_want == full
        torch.testing.assert_close(features, features_want, atol=1e-6, rtol=0)
    # ...and pruning did happen right after them
    for stats in pruner.stats:
        assert stats.tokens_per_layer[:k] == [stats.tokens_per_layer[0]] * k
        assert stats.tokens_per_layer[k] < stats.tokens_per_layer[0]
    assert (out[:, -1] - base[:, -1]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "config",
    [FastAVConfig(global_layer=1), FastAVConfig(strategy="gradual", gradual_start=1),
     FastAVConfig(strategy="fastv", fastv_layer=1)],
    ids=["global_layer", "gradual_start", "fastv_layer"],
)  # fmt: skip
@pytest.mark.parametrize("family", list(DEEPSTACK))
def test_pruning_inside_deepstack_layers_is_refused(request, family, config):
    model = tiny.load(request.getfixturevalue(family))
    with pytest.raises(fastav.PlanError, match="deepstack"):
        fastav.enable(model, config)
    assert fastav.pruner_of(model) is None


@pytest.mark.parametrize("family", list(DEEPSTACK))
def test_default_early_layers_start_at_first_prunable_layer(request, family):
    path = request.getfixturevalue(family)
    assert fastav.resolve(tiny.load(path)).min_prune_layer == DEEPSTACK[family]
    for strategy in ("gradual", "fastv"):
        pruner = fastav.enable(tiny.load(path), FastAVConfig(strategy=strategy))
        assert pruner.plan.first_prune_layer == DEEPSTACK[family]


def test_default_early_layers_follow_a_deeper_deepstack(qwen3_vl):
    """Three deepstack layers (past the default early layer 2): the defaults move to layer 3."""
    config = transformers.AutoConfig.from_pretrained(qwen3_vl)
    config.vision_config.deepstack_visual_indexes = [0, 1, 2]
    torch.manual_seed(0)
    model = transformers.Qwen3VLForConditionalGeneration(config).eval()
    for strategy in ("gradual", "fastv"):
        pruner = fastav.enable(model, FastAVConfig(strategy=strategy))
        assert pruner.plan.first_prune_layer == 3
        fastav.disable(model)
    with pytest.raises(fastav.PlanError, match=r"deepstack adds visual features after text layers 0\.\.2"):
        fastav.enable(model, FastAVConfig(global_layer=2))


def test_qwen2_5_vl_has_no_deepstack_limit(qwen2_5_vl):
    model = tiny.load(qwen2_5_vl)
    assert fastav.resolve(model).min_prune_layer == 1
    assert fastav.enable(model, FastAVConfig(global_layer=1)).plan.first_prune_layer == 1


# --------------------------------------------------------------------------------------------- strategy none
@pytest.mark.parametrize("family", MULTIMODAL)
def test_strategy_none_leaves_logits_identical(family_batch, family):
    path, inputs = family_batch(family)
    model = tiny.load(path)
    before = logits(model, inputs)
    pruner = fastav.enable(model, FastAVConfig(strategy="none"))
    assert torch.equal(logits(model, inputs), before)
    assert all(len(set(s.tokens_per_layer)) == 1 and s.flops_ratio == 1.0 for s in pruner.stats)


# ------------------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("family", MULTIMODAL)
def test_layout_labels_exactly_the_configs_placeholder_ids(family_batch, family):
    path, inputs = family_batch(family)
    model = tiny.load(path)
    config = model.config
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    labels = fastav.resolve(model).default_layout.labels(ids, mask)

    expected = torch.full_like(ids, int(Modality.TEXT))
    for attribute, modality in (("video_token_id", Modality.VIDEO), ("audio_token_id", Modality.AUDIO),
                                ("image_token_id", Modality.IMAGE)):  # fmt: skip
        token = getattr(config, attribute, None)
        if token is not None:
            expected[ids == token] = int(modality)
    expected[mask == 0] = int(Modality.PAD)
    assert torch.equal(labels, expected)
    assert ((labels == int(Modality.VIDEO)).sum(-1) > 0).all()
    # the ids were read from the loaded checkpoint: the config class defaults are different ones
    assert config.video_token_id != type(config)().video_token_id


def test_qwen3_omni_counts_audio_and_video(family_batch):
    path, inputs = family_batch("qwen3_omni")
    model = tiny.load(path)
    pruner = fastav.enable(model, FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.25))
    logits(model, inputs)
    ids = inputs["input_ids"]
    videos = (ids == model.config.video_token_id).sum(-1).tolist()
    audios = (ids == model.config.audio_token_id).sum(-1).tolist()
    assert all(n > 0 for n in videos + audios)
    assert [s.input_tokens["video"] for s in pruner.stats] == videos
    assert [s.input_tokens["audio"] for s in pruner.stats] == audios
    for stats in pruner.stats:
        assert stats.final_tokens["video"] < stats.input_tokens["video"]
        assert stats.final_tokens["audio"] < stats.input_tokens["audio"]
        assert stats.final_tokens["text"] == stats.input_tokens["text"]


def timestamp_positions(ids: torch.Tensor, start: int, end: int) -> list[int]:
    """Byte (text) tokens between the first vision start and the last vision end of a row: the timestamps."""
    inside = range(int((ids == start).nonzero()[0]), int((ids == end).nonzero()[-1]))
    return [p for p in inside if int(ids[p]) < 256]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_vl_moe"])
def test_qwen3_vl_timestamps_are_text_and_kept(family_batch, family):
    path, inputs = family_batch(family)
    model, tokenizer = tiny.load(path), transformers.AutoTokenizer.from_pretrained(path)
    layout = fastav.resolve(model).default_layout
    pruner = fastav.enable(model, FastAVConfig(global_layer=2, global_keep_ratio=0.3, fine_ratio=0.3))
    logits(model, inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    labels = layout.labels(ids, mask)
    last = max(pruner.layer_positions)
    assert last == model.config.text_config.num_hidden_layers - 1
    for row in range(ids.shape[0]):
        stamps = timestamp_positions(ids[row], vl.IDS["vision_start_token_id"], vl.IDS["vision_end_token_id"])
        text = tokenizer.decode(ids[row, stamps])
        grids = int(inputs["video_grid_thw"][row, 0])
        assert re.fullmatch(r"(<\d+\.\d seconds>)+", text) and text.count("seconds") == grids, text
        assert (labels[row, stamps] == int(Modality.TEXT)).all()
        kept = set(pruner.layer_positions[last][row][pruner.layer_valid[last][row]].tolist())
        text_positions = set((labels[row] == int(Modality.TEXT)).nonzero().flatten().tolist())
        assert set(stamps) <= text_positions <= kept
        video_positions = set((labels[row] == int(Modality.VIDEO)).nonzero().flatten().tolist())
        assert not video_positions <= kept  # video was pruned around them
    for stats in pruner.stats:
        assert stats.final_tokens["text"] == stats.input_tokens["text"]
        assert stats.final_tokens["video"] < stats.input_tokens["video"]


# ---------------------------------------------------------------------------------------------------- M-RoPE
def language_model_positions(model, inputs) -> torch.Tensor | None:
    seen = []
    handle = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("position_ids")), with_kwargs=True
    )
    logits(model, inputs)
    handle.remove()
    return seen[0]


def rotary_positions(model, inputs) -> torch.Tensor:
    """The position ids the text model's rotary embedding actually gets, as (3, B, n)."""
    seen = []
    handle = model.model.language_model.rotary_emb.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    logits(model, inputs)
    handle.remove()
    return seen[0].expand(3, -1, -1)


def rows_differ(positions: torch.Tensor) -> bool:
    t, h, w = positions[-3:]
    return not (torch.equal(t, h) or torch.equal(h, w) or torch.equal(t, w))


@pytest.mark.parametrize("family", MULTIMODAL)
def test_mrope_positions_are_three_dimensional(family_batch, family):
    path, inputs = family_batch(family)
    if family != "qwen3_omni":
        assert "mm_token_type_ids" in inputs
    model = tiny.load(path)
    positions = language_model_positions(model, inputs)
    assert positions is not None and positions.shape[0] in (3, 4)
    assert positions.shape[1:] == inputs["input_ids"].shape
    assert rows_differ(positions)
    assert rows_differ(rotary_positions(model, inputs))


def test_qwen2_5_vl_without_mm_token_type_ids_falls_back_to_1d(family_batch):
    path, inputs = family_batch("qwen2_5_vl")
    model = tiny.load(path)
    assert rows_differ(rotary_positions(model, inputs))
    del inputs["mm_token_type_ids"]
    positions = rotary_positions(model, inputs)
    assert torch.equal(positions[0], positions[1]) and torch.equal(positions[1], positions[2])


def test_qwen3_vl_requires_mm_token_type_ids(family_batch):
    path, inputs = family_batch("qwen3_vl")
    del inputs["mm_token_type_ids"]
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        logits(tiny.load(path), inputs)


# ---------------------------------------------------------------------------------------- full Qwen3-Omni
def test_full_qwen3_omni_prunes_through_its_thinker(family_batch):
    path, inputs = family_batch("qwen3_omni_full")
    assert json.loads((path / "config.json").read_text())["architectures"] == ["Qwen3OmniMoeForConditionalGeneration"]
    full = transformers.Qwen3OmniMoeForConditionalGeneration.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()

    # The family loader reads only the thinker out of the full checkpoint, with the same weights.
    thinker = tiny.load(path)
    assert type(thinker) is transformers.Qwen3OmniMoeThinkerForConditionalGeneration
    loaded, inside = thinker.state_dict(), full.thinker.state_dict()
    assert loaded.keys() == inside.keys()
    assert all(torch.equal(loaded[key], inside[key]) for key in loaded)

    config = FastAVConfig(global_layer=2, global_keep_ratio=0.4, fine_ratio=0.25)
    assert fastav.resolve(full).top is full.thinker
    pruner = fastav.enable(full, config)
    assert fastav.pruner_of(full) is pruner and pruner.adapter.top is full.thinker
    out = generate(full.thinker, inputs, STEPS)

    av = av_labels(full, inputs)
    reference_model = tiny.load(path, "eager")
    reference = MaskedKeyReference(
        reference_model,
        text_config_of(reference_model),
        av,
        {s.layer: (s.rule, s.fraction) for s in pruner.plan.steps},
        keep_ratio=config.global_keep_ratio,
    )
    reference.set_valid(inputs["attention_mask"])
    out_ref = generate(reference_model, inputs, STEPS)
    assert torch.equal(out.sequences, out_ref.sequences)
    for got, want in zip(out.logits, out_ref.logits, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert all(s.input_tokens["audio"] > 0 and s.tokens_per_layer[-1] < s.tokens_per_layer[0] for s in pruner.stats)
    # ...and pruning changed the answer: the reference is not trivially the unpruned model
    fastav.disable(full)
    assert (logits(full.thinker, inputs)[:, -1] - out.logits[0]).abs().max() > 1e-3


def test_full_qwen2_5_omni_checkpoint_loads_its_thinker(tmp_path):
    path = tiny.save_omni_thinker(tmp_path / "full", full=True)
    assert json.loads((path / "config.json").read_text())["architectures"] == ["Qwen2_5OmniForConditionalGeneration"]
    thinker = tiny.load(path)
    assert type(thinker) is transformers.Qwen2_5OmniThinkerForConditionalGeneration
    # its weights are the full model's thinker's (rebuilt with the same seed: the full class itself wants a
    # speaker file to load)
    torch.manual_seed(0)
    full = transformers.Qwen2_5OmniForConditionalGeneration(transformers.AutoConfig.from_pretrained(path))
    loaded, inside = thinker.state_dict(), full.thinker.state_dict()
    assert loaded.keys() == inside.keys() and all(torch.equal(loaded[k], inside[k]) for k in loaded)
    assert fastav.resolve(full).top is full.thinker
    # the released checkpoints name an architecture that is no transformers class
    family, architecture = for_checkpoint({"architectures": ["Qwen2_5OmniModel"]})
    assert (family.name, architecture) == ("qwen2_5_omni", "Qwen2_5OmniModel")


# ------------------------------------------------------------------------------------------------ MoE FLOPs
def attention_flops(n: int, dims: ModelDims) -> float:
    d, q, kv = dims.hidden, dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    return 2 * n * d * (2 * q + 2 * kv) + 4 * n * n * q


@pytest.mark.parametrize("family", ["qwen3_omni", "qwen3_vl_moe"])
def test_moe_flops_count_the_active_experts(request, family):
    adapter = fastav.resolve(tiny.load(request.getfixturevalue(family)))
    dims = ModelDims.from_config(adapter.text_config)
    assert adapter.model_dims == dims
    assert (dims.experts, dims.experts_per_token, dims.expert_ffn, dims.ffn) == (4, 2, 32, 128)
    assert dims.dense_layers == frozenset() and dims.shared_expert_ffn == 0
    n, d = 100, dims.hidden
    moe_layer = attention_flops(n, dims) + 6 * n * d * (2 * 32) + n * 2 * d * 4  # active experts + router
    assert all(layer_flops(n, dims, layer) == moe_layer for layer in range(dims.num_layers))
    assert layer_flops(n, dataclasses.replace(dims, experts=0), 0) == attention_flops(n, dims) + 6 * n * d * 128

    # Layers the model keeps dense: mlp_only_layers, and those off the decoder_sparse_step grid.
    config = copy.deepcopy(adapter.text_config)
    config.mlp_only_layers, config.decoder_sparse_step = [1], 2
    dims = ModelDims.from_config(config)
    built = type(adapter.text_model)(config)
    moe_layers = {i for i, layer in enumerate(built.layers) if hasattr(layer.mlp, "experts")}
    assert moe_layers == {3, 5}
    assert dims.dense_layers == frozenset(range(dims.num_layers)) - moe_layers
    assert layer_flops(n, dims, 1) == layer_flops(n, dims, 0) == attention_flops(n, dims) + 6 * n * d * 128
    assert layer_flops(n, dims, 3) == moe_layer


# ------------------------------------------------------------------------------------------------- refusals
def config_dict(model_type: str, architecture: str, **kwargs) -> dict:
    data = transformers.CONFIG_MAPPING[model_type](**kwargs).to_dict()
    data["architectures"] = [architecture]
    return data


def assert_lists_supported(message: str) -> None:
    assert all(name in message for name in supported_classes()), message


@pytest.mark.parametrize(
    ("model_type", "architecture", "kinds"),
    [
        ("qwen3_5", "Qwen3_5ForConditionalGeneration", ["linear attention"]),
        ("gemma4", "Gemma4ForConditionalGeneration", ["sliding-window attention"]),
        ("gemma3n", "Gemma3nForConditionalGeneration", ["sliding-window attention", "KV-shared layers"]),
        ("nemotron_h", "NemotronHForCausalLM", ["linear attention"]),
    ],
)
def test_unsupported_layer_kinds_are_refused_by_name(model_type, architecture, kinds):
    with pytest.raises(UnsupportedModelError) as error:
        for_checkpoint(config_dict(model_type, architecture))
    message = str(error.value)
    assert architecture in message and "cannot prune" in message
    assert all(kind in message for kind in kinds), message
    assert_lists_supported(message)


def test_hub_style_hybrid_pattern_is_refused():
    """A Nemotron-H config.json as the hub has it: the hybrid pattern only, no layer list."""
    with pytest.raises(UnsupportedModelError, match="Mamba/hybrid layers") as error:
        for_checkpoint({"architectures": ["NemotronHForCausalLM"], "hybrid_override_pattern": "M-M*-"})
    assert_lists_supported(str(error.value))


def test_supported_class_with_sliding_window_is_refused():
    kwargs = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                  num_key_value_heads=1, use_sliding_window=True, sliding_window=8, max_window_layers=2)  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="sliding-window attention"):
        for_checkpoint(config_dict("qwen2", "Qwen2ForCausalLM", **kwargs))
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kwargs))
    with pytest.raises(UnsupportedModelError, match="sliding-window attention"):
        fastav.resolve(model)


def test_unknown_architecture_is_refused_listing_supported_classes():
    with pytest.raises(UnsupportedModelError, match="does not support checkpoint with architectures") as error:
        for_checkpoint(config_dict("bert", "BertModel"))
    assert "BertModel" in str(error.value)
    assert_lists_supported(str(error.value))


def test_checkpoints_resolve_to_their_family(request):
    expected = {
        "qwen3_omni": "Qwen3OmniMoeThinkerForConditionalGeneration",
        "qwen3_omni_full": "Qwen3OmniMoeForConditionalGeneration",
        "qwen3_vl": "Qwen3VLForConditionalGeneration",
        "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
        "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    }
    for fixture, architecture in expected.items():
        data = json.loads((request.getfixturevalue(fixture) / "config.json").read_text())
        family = FAMILIES[fixture.removesuffix("_full").removesuffix("_moe")]
        assert for_checkpoint(data) == (family, architecture)
        assert for_checkpoint(data, family=family.name) == (family, architecture)


def test_family_that_disagrees_with_the_checkpoint_is_refused(qwen2_5_vl):
    data = json.loads((qwen2_5_vl / "config.json").read_text())
    with pytest.raises(UnsupportedModelError) as error:
        for_checkpoint(data, family="qwen3_vl")
    message = str(error.value)
    assert "'qwen3_vl'" in message and "Qwen2_5_VLForConditionalGeneration" in message and "'qwen2_5_vl'" in message


def test_resolve_refuses_instantiated_unsupported_models():
    linear = transformers.Qwen3_5ForCausalLM(
        transformers.Qwen3_5TextConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, linear_num_value_heads=2, linear_num_key_heads=2,
            linear_key_head_dim=8, linear_value_head_dim=8, layer_types=["linear_attention", "full_attention"],
        )
    )  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="Qwen3_5ForCausalLM exactly: its decoder has linear attention"):
        fastav.resolve(linear)
    with pytest.raises(UnsupportedModelError, match="Qwen3_5ForCausalLM"):
        fastav.enable(linear, FastAVConfig())
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(UnsupportedModelError, match="does not support GPT2LMHeadModel") as error:
        fastav.resolve(gpt2)
    assert_lists_supported(str(error.value))
