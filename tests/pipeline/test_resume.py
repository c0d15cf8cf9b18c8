"""Resume: an interrupted job rerun processes only what is missing; every id ends up exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import yaml

from pipeline.graph import run
from pipeline.sink import SCHEMA, encode_parquet, part_files, prepare_output, to_table
from pipeline.storage import Storage
from tests.pipeline.conftest import write_local
from tests.pipeline.test_graph import config

ROOT = Path(__file__).resolve().parents[2]


def ids_in(output: Path) -> list[str]:
    return [r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{output}/part-*.parquet')").fetchall()]


def test_interrupted_run_resumes_without_duplicates(ray_cluster, omni_checkpoint, clips, tmp_path):
    good = [v for k, v in sorted(clips.items()) if k.startswith("clip_")]
    source = write_local(tmp_path / "videos", {f"video_{i:02d}.mp4": good[i % len(good)] for i in range(12)})
    output = tmp_path / "out"
    cfg = config(
        str(source),
        str(output),
        str(omni_checkpoint),
        decode={"batch_size": 1},
        infer={"batch_size": 1, "max_new_tokens": 160},  # slow enough per row that the interrupt lands mid-run
        rows_per_file=None,  # one part per block, written as soon as it is inferred
    )
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    env = {**os.environ, "RAY_ADDRESS": ray_cluster, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.batch_infer", "--config", str(config_file), "--run-id", "first"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # A shell's background jobs ignore SIGINT, and the child would inherit that and run to the end.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(output.glob("part-*.parquet")) and job.poll() is None:
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)  # interrupt as soon as the first file landed
    job.wait(timeout=120)
    written_before = ids_in(output) if list(output.glob("part-*.parquet")) else []
    assert 0 < len(written_before) < 12, "the job was not interrupted mid-way"

    summary = run(cfg.model_copy(update={"run_id": "second"}))
    ids = ids_in(output)
    assert len(ids) == len(set(ids)) == 12
    assert summary["success"] == 12
    assert summary["skipped_done"] == len(written_before)
    assert summary["processed_this_run"] == 12 - len(written_before)

    again = run(cfg.model_copy(update={"run_id": "third"}))
    assert again["skipped_done"] == 12 and again["processed_this_run"] == 0
    assert sorted(ids_in(output)) == sorted(ids)

    fresh = run(cfg.model_copy(update={"run_id": "fresh", "overwrite": True}))
    assert fresh["processed_this_run"] == 12 and len(ids_in(output)) == 12


def test_resume_retries_failed_rows_and_keeps_ids_unique(tmp_path):
    storage = Storage()
    rows = [
        {"id": "a", "uri": "/v/a.mp4", "status": "ok"},
        {"id": "b", "uri": "/v/b.mp4", "status": "error", "error_type": "DecodeError", "error_message": "x"},
    ]
    storage.write(str(tmp_path / "part-1.parquet"), encode_parquet(to_table(rows, "r1")))
    failed_only = [{"id": "c", "uri": "/v/c.mp4", "status": "error", "error_type": "ReadError"}]
    storage.write(str(tmp_path / "part-2.parquet"), encode_parquet(to_table(failed_only, "r1")))

    done = prepare_output(str(tmp_path), storage, overwrite=False)
    assert done == {"a"}
    assert [Path(p).name for p in part_files(str(tmp_path), storage)] == ["part-1.parquet"]
    table = duckdb.sql(f"SELECT id, status FROM read_parquet('{tmp_path}/part-1.parquet')").fetchall()
    assert table == [("a", "success")]

    assert prepare_output(str(tmp_path), storage, overwrite=True) == set()
    assert part_files(str(tmp_path), storage) == []


def test_parquet_schema_is_the_documented_one(tmp_path):
    table = to_table([{"id": "a", "uri": "u", "status": "ok", "tokens_video": 5}], "run")
    assert table.schema == SCHEMA
    assert table.column("status").to_pylist() == ["success"]
    assert pa.types.is_timestamp(table.schema.field("finished_at").type)
