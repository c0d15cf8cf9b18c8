"""Calibration: budget solving, the default grid, the sweep, the frontier and the pick under a budget."""

import pytest
import torch

from fastav import FastAVConfig, Modality, SpanLayout
from fastav import testing as tiny
from fastav.flops import ModelDims
from fastav.plan import PlanError, build_plan
from fastav.presets import PRESETS
from fastav.quality.agreement import reference
from fastav.quality.calibration import Point, best_under, flops_ratio, frontier, grid, solve, sweep

LABELS = SpanLayout(((Modality.VIDEO, 10, 1510),)).labels(None, torch.ones(1, 1530))


def _point(flops, top1, kl=0.1, strategy="fastav"):
    return Point(FastAVConfig(strategy=strategy), top1, kl, flops, 10)


def test_solve_matches_a_flops_target_on_both_kinds_of_knob():
    dims = PRESETS["videollama2-av"].dims
    target = flops_ratio(FastAVConfig(global_layer=14, fine_ratio=0.2), LABELS, dims)
    fastv = solve(lambda r: FastAVConfig(strategy="fastv", fastv_layer=2, fastv_ratio=r), target, LABELS, dims, 0, 0.99)
    keep = solve(
        lambda k: FastAVConfig(global_layer=8, global_keep_ratio=k, fine_ratio=0.05), target, LABELS, dims, 0.01, 1
    )
    for config in (fastv, keep):
        assert target - 0.002 < flops_ratio(config, LABELS, dims) <= target + 1e-9
    assert 0.3 < fastv.fastv_ratio < 0.7 and 0.2 < keep.global_keep_ratio < 1
    with pytest.raises(ValueError, match="out of this knob's reach"):
        solve(
            lambda k: FastAVConfig(global_layer=4, global_keep_ratio=k, fine_ratio=0.1), target, LABELS, dims, 0.01, 1
        )


def test_grid_is_valid_and_deduplicated_for_shallow_models():
    configs = grid(28)
    assert len(configs) == 3 * 8 + 4 + 6 and len({c.model_dump_json() for c in configs}) == len(configs)
    shallow = grid(4, ["fastav", "fastv", "gradual"])
    assert all(build_plan(c, 4).steps for c in shallow) and len(shallow) < 15


def test_grid_starts_at_the_first_prunable_layer_of_deepstack_models():
    configs = grid(6, min_layer=3)
    assert all(build_plan(c, 6, min_layer=3).first_prune_layer >= 3 for c in configs)
    with pytest.raises(PlanError, match="deepstack"):
        build_plan(FastAVConfig(strategy="gradual", gradual_start=2), 6, 3, "deepstack adds visual features")


def test_frontier_and_best_under():
    points = [_point(0.3, 0.5), _point(0.5, 0.8), _point(0.5, 0.7), _point(0.6, 0.75), _point(0.9, 0.95)]
    assert [(p.flops_ratio, p.top1) for p in frontier(points)] == [(0.3, 0.5), (0.5, 0.8), (0.9, 0.95)]
    assert best_under(points, 0.56).top1 == 0.8 and best_under(points, 0.2) is None
    tie = [_point(0.5, 0.8, kl=0.3), _point(0.4, 0.8, kl=0.2)]
    assert best_under(tie, 0.6).kl == 0.2


def test_sweep_scores_each_setting_against_the_same_references(checkpoints):
    model = tiny.load(checkpoints["llama"])
    layout = SpanLayout(((Modality.VIDEO, 3, 50),))
    refs = []
    for seed in (0, 1):
        ids = torch.randint(3, 200, (1, 56), generator=torch.Generator().manual_seed(seed))
        prompt = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        refs.append(reference(model, prompt, layout.labels(ids, prompt["attention_mask"]), steps=5))
    seen = []
    configs = [FastAVConfig(strategy="none"), FastAVConfig(global_layer=1, global_keep_ratio=0.05, fine_ratio=0.5)]
    none, heavy = sweep(model, refs, configs, progress=seen.append)
    assert seen == [none, heavy] and none.steps == heavy.steps == 10
    assert (none.top1, none.flops_ratio) == (1.0, 1.0) and none.kl < 1e-6
    assert heavy.flops_ratio < 0.6 and heavy.kl > 1e-3
    assert ModelDims.from_config(model.config).num_layers == 6
