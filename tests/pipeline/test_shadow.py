"""Shadow agreement: rows chosen by id are also generated unpruned, and the output says how close they came.

End to end through the job on the tiny Qwen2.5-Omni checkpoint (real mp4 clips, local Ray): with strategy
`none` the pruned and shadow outputs are the same computation, so agreement is exactly 1; a heavy prune moves
the tiny model's answers, so agreement falls below 1 and the first-token KL is positive.
"""

import json
from collections import Counter

import duckdb
import pytest
import yaml

from jobs.batch_infer import main
from pipeline.runner import is_shadow
from tests.pipeline.conftest import write_local

GOOD = [f"clip_{i:04d}.mp4" for i in range(4)]


def test_shadow_rows_are_chosen_by_id():
    ids = [f"{i:020x}" for i in range(20_000)]
    picked = [i for i in ids if is_shadow(i, 0.01)]
    assert 140 <= len(picked) <= 260  # about 1%
    assert picked == [i for i in ids if is_shadow(i, 0.01)]  # the same rows every time
    assert set(picked) <= {i for i in ids if is_shadow(i, 0.05)}  # a larger fraction adds rows
    assert not any(is_shadow(i, 0.0) for i in ids) and all(is_shadow(i, 1.0) for i in ids[:100])


def _run(tmp_path, clips, omni_checkpoint, fastav: dict) -> tuple[list[tuple], dict]:
    config = {
        "source": {"uri": str(write_local(tmp_path / "videos", {n: clips[n] for n in GOOD}))},
        "output": str(tmp_path / "output"),
        "model": {"checkpoint": str(omni_checkpoint)},
        "decode": {"num_frames": 4},
        "infer": {"batch_size": 3, "max_new_tokens": 12},
        "fastav": fastav,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path)]) == 0
    rows = duckdb.sql(
        "SELECT output_text, shadow_output_text, shadow_token_agreement, shadow_first_divergence, "
        f"shadow_first_token_kl, shadow_ms FROM read_parquet('{tmp_path}/output/part-*.parquet')"
    ).fetchall()
    return rows, json.loads((tmp_path / "output/_summary.json").read_text())


def test_no_pruning_agrees_exactly(ray_cluster, tmp_path, clips, omni_checkpoint, capsys):
    rows, summary = _run(tmp_path, clips, omni_checkpoint, {"strategy": "none", "shadow_fraction": 1.0})
    assert len(rows) == 4
    for text, shadow_text, agreement, divergence, first_kl, shadow_ms in rows:
        assert shadow_text == text and agreement == 1.0 and divergence is None
        assert first_kl == pytest.approx(0.0, abs=1e-6) and shadow_ms > 0
    assert summary["shadow"] == {"rows": 4, "mean_token_agreement": 1.0, "mean_first_token_kl": 0.0}
    assert "shadow          token agreement 1.000 with the unpruned model over 4 rows" in capsys.readouterr().out


def test_heavy_pruning_shows_in_the_agreement(ray_cluster, tmp_path, clips, omni_checkpoint):
    heavy = {"global_layer": 1, "global_keep_ratio": 0.05, "fine_ratio": 0.5, "shadow_fraction": 1.0}
    rows, summary = _run(tmp_path, clips, omni_checkpoint, heavy)
    assert all(r[1] is not None for r in rows)
    assert min(r[2] for r in rows) < 1.0 and max(r[4] for r in rows) > 1e-4
    for _, _, agreement, divergence, _, _ in rows:  # agreement 1 exactly when nothing diverged
        assert (divergence is None) == (agreement == 1.0)
    assert summary["shadow"]["rows"] == 4
    assert summary["shadow"]["mean_token_agreement"] == pytest.approx(sum(r[2] for r in rows) / 4, abs=1e-4)


def test_shadow_fraction_zero_adds_nothing(ray_cluster, tmp_path, clips, omni_checkpoint):
    rows, summary = _run(tmp_path, clips, omni_checkpoint, {"shadow_fraction": 0})
    assert Counter(r[1:] for r in rows) == Counter({(None,) * 5: 4})
    assert summary["shadow"] == {"rows": 0, "mean_token_agreement": None, "mean_first_token_kl": None}
