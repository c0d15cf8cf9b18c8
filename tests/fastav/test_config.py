import math
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from fastav import FastAVConfig, PlanError
from fastav.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fine_ratio": math.nan}, "fine_ratio\n  Value error, must be a number, got nan"),
        ({"fastv_ratio": float("nan")}, "fastv_ratio\n  Value error, must be a number, got nan"),
        ({"global_keep_ratio": "nan"}, "global_keep_ratio\n  Value error, must be a number, got nan"),
        ({"gradual_keep": math.inf}, "gradual_keep\n  Value error, must be a finite number, got inf"),
        ({"global_cut": True}, "global_cut\n  Value error, must be a number, got a boolean (true)"),
        ({"global_layer": True}, "global_layer\n  Value error, must be a number, got a boolean (true)"),
        ({"score_queries": True}, "score_queries\n  Value error, must be a number, got a boolean (true)"),
        ({"seed": False}, "seed\n  Value error, must be a number, got a boolean (false)"),
        ({"fine_ratio": False}, "fine_ratio\n  Value error, must be a number, got a boolean (false)"),
        ({"fine_layers": (15, True)}, "fine_layers\n  Value error, must be a number, got a boolean (true)"),
    ],
)
def test_numbers_must_be_numbers(kwargs, message):
    """NaN fails every bound, so pydantic said "should be less than 1"; true was read as 1."""
    with pytest.raises(ValidationError) as info:
        FastAVConfig(**kwargs)
    assert message in str(info.value)
    assert "less than" not in str(info.value) and "greater than" not in str(info.value)


def test_ints_stay_valid_for_float_fields():
    config = FastAVConfig(fine_ratio=0, global_keep_ratio=1, gradual_keep=1, fastv_ratio=0, global_cut=730, seed=3)
    assert config.fine_ratio == 0.0 and isinstance(config.fine_ratio, float) and config.global_keep_ratio == 1.0
    assert config.global_cut == 730 and FastAVConfig(dry_run=True).dry_run is True  # booleans stay for bool fields
    assert FastAVConfig(fine_ratio="0.25").fine_ratio == 0.25  # pydantic's lax strings, as before


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_config_imports_without_torch():
    """`import fastav` is lazy (PEP 562): the config, and a plan error type, need pydantic only."""
    done = _run(
        "import sys\n"
        "import fastav\n"
        "from fastav import FastAVConfig, PlanError\n"
        "import fastav.config\n"
        "assert fastav.FastAVConfig is fastav.config.FastAVConfig is FastAVConfig\n"
        "FastAVConfig(fine_ratio=0.3).summary()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'numpy', 'ray'))\n"
        "assert not heavy, heavy\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_lazy_package_still_offers_every_public_name_and_submodule(tmp_path):
    done = _run(
        "import fastav\n"
        "names = {name: getattr(fastav, name) for name in fastav.__all__}\n"
        "assert set(fastav.__all__) <= set(dir(fastav))\n"
        "from fastav import *  # noqa\n"
        "from fastav import Pruner, Modality, SpanLayout, TokenIdLayout, UnsupportedModelError, get_preset, testing\n"
        "assert Pruner.__module__ == 'fastav.pruner' and fastav.resolve is fastav.families.resolve\n"
        "assert fastav.quality.__name__ == 'fastav.quality' and fastav.testing is testing\n"
        "try:\n"
        "    fastav.no_such_name\n"
        "except AttributeError as error:\n"
        "    assert 'no_such_name' in str(error)\n"
        "else:\n"
        "    raise AssertionError('fastav.no_such_name resolved')\n"
        f"model = testing.load(testing.save_qwen2(__import__('pathlib').Path({str(tmp_path)!r})))\n"
        "layout = TokenIdLayout(video_ids=frozenset({testing.VIDEO_ID}), audio_ids=frozenset({testing.AUDIO_ID}))\n"
        "pruner = fastav.enable(model, layout=layout)\n"
        "assert isinstance(pruner, Pruner) and fastav.pruner_of(model) is pruner\n"
        "assert pruner.config == FastAVConfig()\n"
        "fastav.disable(model)\n"
        "assert fastav.pruner_of(model) is None\n"
        "pruner = enable(model, preset='videollama2-av', config=FastAVConfig(global_layer=2))\n"
        "assert pruner.config.global_layer == 2\n"
        "disable(model)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
