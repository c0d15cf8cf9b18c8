import json

import pytest

from fastav import PRESETS, FastAVConfig, get_preset
from fastav.cli import main, preset_stats


@pytest.mark.parametrize("cut", [700, 725, 750])
def test_videollama2_preset_reproduces_the_papers_56_percent(cut):
    preset = get_preset("videollama2-av")
    stats = preset_stats(preset, preset.config.model_copy(update={"global_cut": cut}))
    assert abs(stats.fastv_flops_ratio - 0.56) <= 0.01
    assert abs(stats.flops_ratio - 0.56) <= 0.01
    assert stats.input_tokens == {"text": 44, "video": 676, "audio": 1496, "image": 0}
    assert stats.after_global["video"] == 676 and stats.after_global["audio"] == cut - 690


def test_every_preset_states_assumptions_and_saves_flops():
    for preset in PRESETS.values():
        assert preset.assumptions
        stats = preset_stats(preset, preset.config)
        assert 0.4 < stats.flops_ratio < 0.7
        assert stats.tokens_per_layer[0] == sum(count for _, count in preset.segments)
    assert preset_stats(PRESETS["qwen2.5-omni-7b"], FastAVConfig(strategy="none")).flops_ratio == 1.0


def test_span_presets_label_the_segments():
    import torch

    preset = get_preset("video-salmonn2")
    labels = preset.layout.labels(None, torch.ones(1, preset.layout.length + 30))
    assert torch.equal(labels, preset.labels())


def test_cli_flops_prints_table_and_ratio(capsys):
    assert main(["flops", "--preset", "videollama2-av"]) == 0
    out = capsys.readouterr().out
    assert "   27      86     42" in out  # tokens and AV tokens entering the last layer
    assert "56.3% (FastV formula)" in out


def test_cli_flops_json_and_several_cuts(capsys):
    assert main(["flops", "--preset", "videollama2-av", "--cut", "700", "750", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["settings"]["global_cut"] for r in rows] == [700, 750]
    assert rows[0]["flops_pruned"] < rows[1]["flops_pruned"]


def test_cli_rejects_bad_values_naming_the_field(capsys):
    assert main(["flops", "--preset", "videollama2-av", "--fine-ratio", "1.5"]) == 2
    assert "fine_ratio" in capsys.readouterr().err
    assert main(["flops", "--preset", "videollama2-av", "--global-layer", "40"]) == 2
    assert "global_layer=40" in capsys.readouterr().err


def test_family_presets_at_real_dimensions(capsys):
    omni = get_preset("qwen3-omni-30b-a3b")
    d = omni.dims
    assert (d.num_layers, d.hidden, d.heads, d.kv_heads, d.experts, d.experts_per_token, d.expert_ffn) == (
        48, 2048, 32, 4, 128, 8, 768,
    )  # fmt: skip
    assert d.mlp_width(0) == 8 * 768  # the active experts, not a dense FFN
    stats = preset_stats(omni, omni.config)
    assert stats.input_tokens["video"] == 4 * 112 and stats.input_tokens["audio"] == 375
    assert preset_stats(get_preset("qwen3-vl-8b"), FastAVConfig()).input_tokens["audio"] == 0
    assert main(["flops", "--preset", "qwen3-omni-30b-a3b"]) == 0
    out = capsys.readouterr().out
    assert "MoE 128 experts, 8 active of width 768" in out and "first prunable layer: 3" in out
    assert main(["presets"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("qwen3-omni-30b-a3b", "qwen3-vl-8b", "qwen3-vl-30b-a3b", "qwen2.5-vl-7b"))
    # deepstack: the presets refuse pruning inside the deepstack layers, naming the field
    assert main(["flops", "--preset", "qwen3-vl-8b", "--global-layer", "2"]) == 2
    assert "global_layer=2" in capsys.readouterr().err


def test_scoring_rows_are_charged_only_as_far_as_tokens_exist():
    """score_queries beyond the prompt's length computes n rows, not score_queries rows (issue 17, item 11)."""
    from fastav.flops import scoring_flops

    preset = get_preset("qwen2.5-vl-7b")
    n = sum(count for _, count in preset.segments)
    assert scoring_flops(n, preset.dims, 1024) == scoring_flops(n, preset.dims, n) > scoring_flops(n, preset.dims, 16)
    many = preset_stats(preset, FastAVConfig(strategy="gradual", score_queries=1024))
    exact = preset_stats(preset, FastAVConfig(strategy="gradual", score_queries=n))
    assert n < 1024 and many.flops_ratio == exact.flops_ratio < 1
