from pathlib import Path

import duckdb
import pytest

from fastav.plan import build_plan
from fastav.presets import get_preset
from jobs.batch_infer import main
from pipeline.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid():
    config = PipelineConfig.from_yaml(ROOT / "jobs/configs/example.yaml")
    assert config.source.uri.startswith("s3://") and config.infer.num_gpus == 1


@pytest.mark.parametrize(
    ("name", "family"), [("qwen3-omni", "qwen3_omni"), ("qwen3-vl", "qwen3_vl"), ("qwen2.5-vl", "qwen2_5_vl")]
)
def test_family_configs_are_valid_and_fit_their_family(name, family):
    config = PipelineConfig.from_yaml(ROOT / f"jobs/configs/{name}.yaml")
    assert config.model.family == family and config.infer.num_gpus == 1
    # the pruning settings plan on the family's real depth and first prunable layer (deepstack: 3)
    preset = {"qwen3_omni": "qwen3-omni-30b-a3b", "qwen3_vl": "qwen3-vl-8b", "qwen2_5_vl": "qwen2.5-vl-7b"}[family]
    dims, first = get_preset(preset).dims, get_preset(preset).min_prune_layer
    assert build_plan(config.fastav.pruning(), dims.num_layers, first).first_prune_layer >= first


def test_unknown_key_is_refused_by_name(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {uri: /v}\noutput: /o\nmodel: {checkpoint: /m}\ninfer: {batch_sise: 4}\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "infer.batch_sise" in err and "Extra inputs are not permitted" in err


def test_embedded_default_runs_end_to_end(ray_cluster, tmp_path, capsys):
    assert main(["--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "videos          8 (8 success, 0 error)" in out
    assert "prefill FLOPs" in out
    rows = duckdb.sql(
        f"SELECT count(*), min(flops_ratio), max(flops_ratio) FROM read_parquet('{tmp_path}/output/part-*.parquet')"
    ).fetchall()[0]
    assert rows[0] == 8 and 0 < rows[1] <= rows[2] < 1
    assert (tmp_path / "output/_summary.json").exists()
    assert (tmp_path / "tiny-qwen2.5-omni/processor_config.json").exists()


def test_a_stale_ray_cluster_record_does_not_capture_a_local_run(tmp_path):
    """`ray start` nodes stopped by a signal (the README recipe's `kill %1 %2`) leave their address in Ray's
    temp dir; a later local run must start its own Ray instead of waiting for that dead cluster's GCS."""
    import shutil
    import socket
    import tempfile

    from tests.jobrun import batch_infer

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(dead)
    env = {"RAY_ADDRESS": None, "RAY_TMPDIR": str(ray_tmp), "HF_HUB_OFFLINE": "1"}
    try:  # before the fix: a GCS connection retried until the timeout
        proc = batch_infer("--workdir", str(tmp_path), env=env, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "videos          8 (8 success, 0 error)" in proc.stdout
        assert any((ray_tmp / "ray").glob("session_2*"))  # its own local Ray, under the given temp dir
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
