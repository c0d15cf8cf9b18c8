import pytest
from pydantic import ValidationError

from fastav import FastAVConfig, PlanError
from fastav.plan import build_plan


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"global_layer": 0}, "global_layer"),
        ({"fastv_layer": 0}, "fastv_layer"),
        ({"fine_ratio": 1.0}, "fine_ratio"),
        ({"fine_ratio": -0.1}, "fine_ratio"),
        ({"fastv_ratio": 1.0}, "fastv_ratio"),
        ({"global_keep_ratio": 0.0}, "global_keep_ratio"),
        ({"global_cut": 0}, "global_cut"),
        ({"fine_layers": (0, 3)}, "fine_layers"),
        ({"modalities": ()}, "modalities"),
        ({"strategy": "fastest"}, "strategy"),
        ({"global_ratio": 0.5}, "global_ratio"),  # unknown keys are rejected by name
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValidationError) as info:
        FastAVConfig(**kwargs)
    assert field in str(info.value)


def test_config_is_immutable():
    config = FastAVConfig()
    with pytest.raises(ValidationError):
        config.fine_ratio = 0.5


def test_defaults_follow_the_paper():
    plan = build_plan(FastAVConfig(), num_layers=28)
    assert plan.steps[0].layer == 14 and plan.steps[0].rule == "keep_first" and plan.steps[0].is_global
    assert [s.layer for s in plan.steps[1:]] == list(range(15, 28))
    assert {s.fraction for s in plan.steps[1:]} == {0.2}
    assert plan.scoring_layers == frozenset(range(14, 27))  # fine layer l is scored at l - 1


def test_strategy_plans():
    assert build_plan(FastAVConfig(strategy="none"), 28).steps == ()
    fastv = build_plan(FastAVConfig(strategy="fastv", fastv_layer=2, fastv_ratio=0.5), 28)
    assert [(s.layer, s.rule, s.fraction) for s in fastv.steps] == [(2, "drop_fraction", 0.5)]
    assert fastv.scoring_layers == {1}
    low = build_plan(FastAVConfig(strategy="low_attentive", global_layer=10), 28)
    assert low.steps[0].rule == "keep_top" and 9 in low.scoring_layers
    rand = build_plan(FastAVConfig(strategy="random", global_layer=10), 28)
    assert rand.steps[0].rule == "random" and 9 not in rand.scoring_layers
    explicit = build_plan(FastAVConfig(global_layer=4, fine_layers=(6, 8)), 12)
    assert [s.layer for s in explicit.steps] == [4, 6, 8]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (FastAVConfig(global_layer=28), "global_layer=28"),
        (FastAVConfig(strategy="fastv", fastv_layer=40), "fastv_layer=40"),
        (FastAVConfig(global_layer=20, fine_layers=(30,)), "fine_layers=30"),
        (FastAVConfig(fine_layers=(5,)), "fine_layers contains 5"),  # not after the default global layer 14
    ],
)
def test_layers_beyond_the_model_name_the_field(config, message):
    with pytest.raises(PlanError, match=message):
        build_plan(config, num_layers=28)


def test_min_prune_layer_is_enforced():
    with pytest.raises(PlanError, match=r"prunable layers \[3, 27\]"):
        build_plan(FastAVConfig(strategy="fastv", fastv_layer=2), 28, min_layer=3)


def test_fine_layers_must_follow_global():
    with pytest.raises(ValidationError, match="fine_layers must all come after global_layer=10"):
        FastAVConfig(global_layer=10, fine_layers=(5, 12))
