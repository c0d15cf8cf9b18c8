"""Resume: an interrupted job rerun processes only what is missing; every id ends up exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.graph import run
from pipeline.sink import SCHEMA, encode_parquet, part_files, prepare_output, to_table
from pipeline.storage import Storage
from tests.jobrun import clip_corpus, config_file, wait_for
from tests.pipeline.conftest import write_local
from tests.pipeline.test_graph import config

ROOT = Path(__file__).resolve().parents[2]


def ids_in(output: Path) -> list[str]:
    return [r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{output}/part-*.parquet')").fetchall()]


def _start_job(config_file: Path, ray_address: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.batch_infer", "--config", str(config_file), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_killed_driver_loses_only_unwritten_rows(ray_cluster, omni_checkpoint, clips, tmp_path):
    """kill -9 of the driver mid-run: parts written so far stay (they land while the job runs), and a rerun
    yields every id exactly once."""
    output = tmp_path / "out"
    cfg = config(
        str(clip_corpus(tmp_path, clips, 16)),
        str(output),
        str(omni_checkpoint),
        decode={"batch_size": 1},
        infer={"batch_size": 1, "max_new_tokens": 60},
        sink={"max_rows_per_part": 2},
    )
    job = _start_job(config_file(cfg, tmp_path), ray_cluster, "--run-id", "first")
    landed = wait_for(lambda: len(list(output.glob("part-*.parquet"))) >= 2, job, timeout=300)
    parts_at_kill = len(list(output.glob("part-*.parquet")))
    job.kill()  # SIGKILL: no handler, no flush
    job.wait(timeout=60)
    assert landed and job.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    written = ids_in(output)
    assert parts_at_kill >= 2 and 4 <= len(written) < 16 and len(written) == len(set(written))

    summary = run(cfg.model_copy(update={"run_id": "second"}))
    ids = ids_in(output)
    assert len(ids) == len(set(ids)) == 16 and summary["success"] == 16
    assert summary["skipped_done"] == len(written) and summary["processed_this_run"] == 16 - len(written)

    again = run(cfg.model_copy(update={"run_id": "third"}))
    assert again["skipped_done"] == 16 and again["processed_this_run"] == 0
    assert sorted(ids_in(output)) == sorted(ids)

    fresh = run(cfg.model_copy(update={"run_id": "fresh", "overwrite": True}))
    assert fresh["processed_this_run"] == 16 and len(ids_in(output)) == 16


def _infer_actor_pids() -> list[int]:
    """Processes whose title Ray set to the inference actor's (`ray::MapWorker(MapBatches(InferActor))...`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                title = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if title.startswith(b"ray::") and b"InferActor" in title:
                pids.append(int(proc.name))
    return pids


def test_a_killed_model_actor_is_replaced_and_no_row_is_lost_or_doubled(ray_cluster, omni_checkpoint, clips, tmp_path):
    output = tmp_path / "out"
    cfg = config(
        str(clip_corpus(tmp_path, clips, 12)),
        str(output),
        str(omni_checkpoint),
        decode={"batch_size": 1},
        infer={"batch_size": 1, "max_new_tokens": 60},
        sink={"max_rows_per_part": 2},
    )
    job = _start_job(config_file(cfg, tmp_path), ray_cluster)
    assert wait_for(lambda: list(output.glob("part-*.parquet")) and _infer_actor_pids(), job, timeout=300)
    victims = _infer_actor_pids()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert len(ids_in(output)) < 12, "the job finished before the actor could be killed"
    log, _ = job.communicate(timeout=400)
    assert job.returncode == 0, log[-3000:]
    ids = ids_in(output)
    assert len(ids) == len(set(ids)) == 12
    statuses = duckdb.sql(f"SELECT status, count(*) FROM read_parquet('{output}/part-*.parquet') GROUP BY 1").fetchall()
    assert statuses == [("success", 12)]
    assert not set(victims) & set(_infer_actor_pids())


def test_reruns_retry_transient_errors_and_skip_permanent_ones(tmp_path):
    storage = Storage()
    rows = [
        {"id": "a", "uri": "/v/a.mp4", "status": "ok"},
        {"id": "b", "uri": "/v/b.mp4", "status": "error", "error_type": "DecodeError", "error_message": "x"},
    ]
    storage.write(str(tmp_path / "part-1.parquet"), encode_parquet(to_table(rows, "r1")))
    failed_only = [{"id": "c", "uri": "/v/c.mp4", "status": "error", "error_type": "ReadError"}]
    storage.write(str(tmp_path / "part-2.parquet"), encode_parquet(to_table(failed_only, "r1")))

    settled = prepare_output(str(tmp_path), storage, overwrite=False)
    assert settled == {"a": "success", "b": "error"}  # c (transient) runs again: its row is gone
    assert [Path(p).name for p in part_files(str(tmp_path), storage)] == ["part-1.parquet"]
    table = duckdb.sql(
        f"SELECT id, status, error_retryable FROM read_parquet('{tmp_path}/part-1.parquet') ORDER BY id"
    ).fetchall()
    assert table == [("a", "success", None), ("b", "error", False)]

    assert prepare_output(str(tmp_path), storage, overwrite=False, retry_errors=True) == {"a": "success"}
    assert duckdb.sql(f"SELECT id FROM read_parquet('{tmp_path}/part-*.parquet')").fetchall() == [("a",)]

    assert prepare_output(str(tmp_path), storage, overwrite=True) == {}
    assert part_files(str(tmp_path), storage) == []


def test_a_broken_file_is_decoded_once_unless_asked(ray_cluster, omni_checkpoint, clips, tmp_path):
    source = write_local(tmp_path / "videos", {"good.mp4": clips["clip_0000.mp4"], "bad.mp4": clips["truncated.mp4"]})
    cfg = config(str(source), str(tmp_path / "out"), str(omni_checkpoint))
    first = run(cfg.model_copy(update={"run_id": "one"}))
    assert first["errors_by_type"] == {"DecodeError": 1} and first["errors_retryable"] == 0
    second = run(cfg.model_copy(update={"run_id": "two"}))
    assert second["processed_this_run"] == 0 and second["skipped_permanent_errors"] == 1
    third = run(cfg.model_copy(update={"run_id": "three"}), retry_errors=True)
    assert third["processed_this_run"] == 1 and third["errors_by_type"] == {"DecodeError": 1}
    assert len(ids_in(tmp_path / "out")) == 2


def test_parquet_schema_is_the_documented_one(tmp_path):
    table = to_table([{"id": "a", "uri": "u", "status": "ok", "tokens_video": 5}], "run")
    assert table.schema == SCHEMA
    assert table.column("status").to_pylist() == ["success"]
    assert pa.types.is_timestamp(table.schema.field("finished_at").type)
