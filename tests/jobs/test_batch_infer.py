from pathlib import Path

import duckdb

from jobs.batch_infer import main
from pipeline.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid():
    config = PipelineConfig.from_yaml(ROOT / "jobs/configs/example.yaml")
    assert config.source.uri.startswith("s3://") and config.infer.num_gpus == 1


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
