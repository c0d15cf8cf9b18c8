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
    assert err == "batch_infer: invalid configuration: infer.batch_sise: unknown field (value 4)\n"


VALID = "source: {uri: /v}\noutput: /o\nmodel: {checkpoint: /m}\n"


def test_config_errors_are_one_line_each_without_urls(tmp_path, capsys):
    """Field path, reason, value: one line per error, none of pydantic's multi-line report or its links."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        VALID.replace("/m}", "/m, dtype: fp8}")
        + "infer: {batch_sise: 4, num_gpus: -1}\nfastav: {fine_ratio: 1.5, global_cut: true, gradual_keep: .nan}\n"
    )
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "https://" not in err and "validation error" not in err and "input_value" not in err
    assert err.splitlines() == [
        "batch_infer: invalid configuration: " + line
        for line in (
            "model.dtype: must be 'auto', 'float32', 'bfloat16' or 'float16' (value \"fp8\")",
            "infer.num_gpus: must be greater than or equal to 0 (value -1)",
            "infer.batch_sise: unknown field (value 4)",
            "fastav.global_cut: must be a number, got a boolean (true)",
            "fastav.fine_ratio: must be less than 1 (value 1.5)",
            "fastav.gradual_keep: must be a number, got nan",
        )
    ]


def test_config_json_errors_are_one_line_each(capsys):
    """`fastav submit` sends the config as JSON; on the cluster its errors read the same way."""
    assert main(["--config-json", '{"source": {"uri": "/v"}, "output": "/o", "model": {}, "infer": {"x": 1}}']) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "batch_infer: invalid configuration: model.checkpoint: missing (required)",
        "batch_infer: invalid configuration: infer.x: unknown field (value 1)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            VALID + "infer: {batch_size: 4\nfastav: {}\n",
            "bad.yaml:5:7: not valid YAML: expected ',' or '}', but got ':'",
        ),
        (
            "source: {uri: /v}\noutput: /o\nmodel: checkpoint: /m\n",
            "bad.yaml:3:18: not valid YAML: mapping values are not allowed here",
        ),
        ("- source: {uri: /v}\n- output: /o\n", "bad.yaml: the top level must be a mapping of settings (source:, "),
        ("s3://bucket/videos\n", "bad.yaml: the top level must be a mapping of settings (source:, "),
    ],
    ids=["unclosed-brace", "colon-in-value", "top-level-list", "top-level-scalar"],
)
def test_malformed_yaml_is_one_line_with_file_line_and_column(tmp_path, capsys, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"batch_infer: invalid configuration: {tmp_path}/{message}")


def test_an_empty_config_file_names_the_missing_fields(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["--config", str(empty)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"batch_infer: invalid configuration: {field}: missing (required)" for field in ("source", "output", "model")
    ]


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"batch_infer: invalid configuration: {tmp_path}/nope.yaml: cannot read: No such file or directory\n"
    )


def test_submit_and_calibrate_print_config_errors_one_line_each(tmp_path, capsys):
    from jobs import calibrate, cli

    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID + "infer: {batch_sise: 4}\nfastav: {fine_ratio: .nan}\n")
    expected = ["infer.batch_sise: unknown field (value 4)", "fastav.fine_ratio: must be a number, got nan"]
    for prog, run in (
        ("fastav", lambda: cli.main(["submit", "--config", str(bad), "--dry-run"])),
        ("fastav", lambda: cli.main(["run", "--config", str(bad)])),
        ("fastav calibrate", lambda: calibrate.main(["--config", str(bad)])),
    ):
        assert run() == 2
        lines = capsys.readouterr().err.splitlines()
        prog = "batch_infer" if lines and lines[0].startswith("batch_infer") else prog  # `run` is batch_infer
        assert lines == [f"{prog}: invalid configuration: {line}" for line in expected]
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("source: [\n")
    assert cli.main(["submit", "--config", str(syntax), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastav: invalid configuration: {syntax}:2:1: not valid YAML: ") and err.count("\n") == 1
    assert calibrate.main(["--config", str(syntax)]) == 2
    assert capsys.readouterr().err.startswith(f"fastav calibrate: invalid configuration: {syntax}:2:1: not valid YAML")


def test_a_typo_is_reported_without_importing_torch_or_ray(tmp_path):
    """Fast feedback: the path from `python -m jobs.batch_infer --config` to its validation error imports neither
    torch nor Ray (they take seconds); `-X importtime` lists every module the process imported."""
    import subprocess
    import sys

    bad = tmp_path / "typo.yaml"
    bad.write_text(VALID + "infer: {batch_sise: 4}\n")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jobs.batch_infer", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "pydantic" in imported and "pipeline.config" in imported  # the listing is real
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "ray", "transformers", "pyarrow", "numpy"))
    assert heavy == []
    messages = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert messages == ["batch_infer: invalid configuration: infer.batch_sise: unknown field (value 4)"]


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
