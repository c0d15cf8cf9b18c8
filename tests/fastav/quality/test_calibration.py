"""Calibration: budget solving, the default grid, the FLOPs-matched settings, the sweep, the frontier and the
pick under a budget (ties within the per-input noise go to the lower KL)."""

import pytest
import torch

from fastav import FastAVConfig, Modality, SpanLayout
from fastav import testing as tiny
from fastav.flops import ModelDims
from fastav.plan import PlanError, build_plan
from fastav.presets import PRESETS
from fastav.quality.agreement import reference
from fastav.quality.calibration import (
    NOISE_SE,
    STRATEGIES,
    Point,
    best_under,
    flops_ratio,
    frontier,
    grid,
    matched,
    noise,
    pick,
    solve,
    sweep,
)

LABELS = SpanLayout(((Modality.VIDEO, 10, 1510),)).labels(None, torch.ones(1, 1530))


def _point(flops, top1, kl=0.1, strategy="fastav"):
    return Point(FastAVConfig(strategy=strategy), top1, kl, flops, 10)


def _measured(strategy, hits, kl, flops=0.55, steps=16):
    """A Point measured on len(hits) inputs of `steps` steps, `hits[i]` of them agreeing on input i."""
    per_input = tuple(h / steps for h in hits)
    config = FastAVConfig(strategy=strategy)
    return Point(config, sum(hits) / (steps * len(hits)), kl, flops, steps * len(hits), per_input, (kl,) * len(hits))


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
    none, heavy = sweep(model, refs, configs, progress=seen.append, matched=configs[1:])
    assert seen == [none, heavy] and none.steps == heavy.steps == 10
    assert (none.matched, heavy.matched) == (False, True) and len(heavy.top1_per_input) == len(heavy.kl_per_input) == 2
    assert heavy.top1 == pytest.approx(sum(heavy.top1_per_input) / 2) and none.top1_se == 0
    assert (none.top1, none.flops_ratio) == (1.0, 1.0) and none.kl < 1e-6
    assert heavy.flops_ratio < 0.6 and heavy.kl > 1e-3
    assert ModelDims.from_config(model.config).num_layers == 6


def test_a_one_step_lead_with_a_higher_kl_is_a_tie_and_the_lower_kl_is_picked():
    # the case: the paper's cut 49/64 (KL 0.541) against gradual 48/64 (KL 0.311) on 4 inputs x 16 steps
    cut, gradual = _measured("fastav", (13, 12, 12, 12), kl=0.541), _measured("gradual", (12, 12, 12, 12), kl=0.311)
    assert cut.top1 - gradual.top1 == 1 / 64
    # paired differences (1/16, 0, 0, 0): sd 1/32, standard error 1/64
    assert noise(cut, gradual) == pytest.approx(NOISE_SE / 64)
    chosen = pick([cut, gradual, _measured("fastv", (16,) * 4, kl=0.0, flops=0.6)], max_flops=0.56)
    assert chosen.tie and chosen.leader is cut and chosen.best is gradual and chosen.runner_up is cut
    assert set(chosen.tied) == {cut, gradual} and best_under([cut, gradual], 0.56) is gradual
    text = chosen.describe()
    assert text.startswith("tie: gradual and fastav") and "gradual has the lower KL" in text
    assert chosen.to_dict()["tie"] and chosen.to_dict()["lower_kl"]["strategy"] == "gradual"


def test_a_clear_lead_picks_the_winner_even_at_a_higher_kl():
    winner, other = _measured("fastav", (15, 15, 14, 15), kl=0.5), _measured("gradual", (12, 12, 12, 12), kl=0.3)
    chosen = pick([winner, other], max_flops=0.56)
    assert not chosen.tie and chosen.best is winner and chosen.runner_up is other
    assert chosen.margin == pytest.approx(11 / 64) and chosen.noise == pytest.approx(NOISE_SE / 64)
    assert "fastav leads gradual" in chosen.describe() and "exceeds the noise" in chosen.describe()


def test_the_noise_is_the_paired_per_input_spread_with_a_one_step_floor():
    # a 4-step lead made of one input going the other way is not a lead
    uneven, steady = _measured("fastav", (16, 16, 16, 4), kl=0.4), _measured("gradual", (12, 12, 12, 12), kl=0.2)
    assert steady.top1 + 4 / 64 == uneven.top1
    assert noise(uneven, steady) == pytest.approx(NOISE_SE * 0.375 / 2)  # sd 6/16 over sqrt(4) inputs
    assert pick([uneven, steady], 1).best is steady
    # identical per-input differences have no spread: the floor of one step is left
    a, b = _measured("fastav", (13, 13), kl=0.4), _measured("gradual", (12, 12), kl=0.2)
    assert noise(a, b) == 1 / 32 and pick([a, b], 1).best is a  # two steps of 32 > one
    # without per-input values (one input) only the floor
    assert noise(_point(0.5, 0.8), _point(0.5, 0.7)) == 1 / 10
    assert pick([], 1).best is None and pick([_point(0.5, 0.8)], 0.4).best is None


def test_points_carry_their_spread_over_inputs():
    point = _measured("gradual", (12, 14, 16, 10), kl=0.3)
    row = point.to_dict()
    assert row["inputs"] == 4 and row["top1_spread"]["per_input"] == [0.75, 0.875, 1.0, 0.625]
    assert (row["top1_spread"]["min"], row["top1_spread"]["max"]) == (0.625, 1.0)
    assert row["top1_spread"]["se"] == pytest.approx(0.0807, abs=1e-4) and row["kl_spread"]["se"] == 0
    assert row["matched"] is False


def test_each_strategy_gets_a_setting_matched_to_the_budget_over_all_inputs():
    dims = PRESETS["videollama2-av"].dims
    inputs = [LABELS, SpanLayout(((Modality.VIDEO, 10, 1010),)).labels(None, torch.ones(1, 1030))]
    for budget in (0.3, 0.56, 0.9):
        found, missing = matched(inputs, dims, budget)
        assert [c.strategy for c in found] == list(STRATEGIES) and not missing
        for config in found:
            mean = sum(flops_ratio(config, labels, dims) for labels in inputs) / len(inputs)
            assert budget - 0.01 < mean <= budget + 1e-9, (config.summary(), mean)
    found, missing = matched(inputs, dims, 0.01, ["fastv", "gradual"])
    assert not found and set(missing) == {"fastv", "gradual"} and "out of this knob's reach" in missing["fastv"]
    # deepstack models: the matched settings start at the first prunable layer
    found, _ = matched([LABELS], dims, 0.7, min_layer=5)
    assert all(build_plan(c, dims.num_layers, min_layer=5).first_prune_layer >= 5 for c in found)
