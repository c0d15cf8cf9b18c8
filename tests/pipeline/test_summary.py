"""A throttling object store (503 SlowDown through a proxy over HTTP): rows are never lost, the summary retries
its reads, and when it still cannot be built the data stays complete and the job says so."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from pipeline.graph import run
from pipeline.summary import format_summary
from tests.jobrun import batch_infer
from tests.pipeline.test_graph import config, download_parts
from tests.s3proxy import FaultyS3Proxy


@pytest.fixture
def proxy(s3_endpoint):
    proxy = FaultyS3Proxy(s3_endpoint, seed=7)
    yield proxy
    proxy.close()


def _run_job(cfg, tmp_path: Path, ray_address: str) -> subprocess.CompletedProcess:
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return batch_infer("--config", str(config_file), env={"RAY_ADDRESS": ray_address}, timeout=500)


def _corpus(s3, bucket: str, clips: dict, count: int) -> None:
    s3.s3.create_bucket(Bucket=bucket)
    s3.s3.create_bucket(Bucket=f"{bucket}-out")
    for i in range(count):
        s3.write(f"s3://{bucket}/in/video_{i}.mp4", clips["clip_0001.mp4"])


def test_sixty_percent_slowdowns_lose_no_row_and_write_the_summary(
    s3, proxy, ray_cluster, omni_checkpoint, clips, tmp_path
):
    _corpus(s3, "throttled", clips, 4)
    proxy.fail_rate = 0.6
    cfg = config("s3://throttled/in/", "s3://throttled-out/run/", str(omni_checkpoint), proxy.url)
    # 60% of requests failing: 16 tries leave a request failing for good at 0.6^16 (3e-4), as storage.max_attempts
    # now counts tries (the default 10, 0.6%, failed the preflight's HeadBucket in one run of this test)
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"max_attempts": 16})})
    proc = _run_job(cfg, tmp_path, ray_cluster)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.injected >= 8 and proxy.injected / proxy.requests > 0.4

    proxy.fail_rate = 0.0
    parts = download_parts(s3, "s3://throttled-out/run/", tmp_path / "parts")
    rows = duckdb.sql(f"SELECT id, status, error_type FROM read_parquet({[str(p) for p in parts]})").fetchall()
    assert len(rows) == len({r[0] for r in rows}) == 4  # every input exactly once
    assert {r[2] for r in rows if r[1] == "error"} <= {"ReadError"}  # throttled past every retry: transient
    summary = json.loads(s3.read("s3://throttled-out/run/_summary.json"))
    assert summary["videos"] == 4 and summary["success"] + summary["error"] == 4


def test_a_summary_that_cannot_be_read_back_leaves_complete_data_and_says_so(
    s3, proxy, ray_cluster, omni_checkpoint, clips, tmp_path
):
    _corpus(s3, "unreadable", clips, 4)
    proxy.fail_rate = 1.0
    proxy.rule = lambda method, path: method == "GET" and "/part-" in path  # writes pass, reading them back fails
    cfg = config(
        "s3://unreadable/in/",
        "s3://unreadable-out/run/",
        str(omni_checkpoint),
        proxy.url,
        sink={"max_rows_per_part": 2},
    )
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"max_attempts": 2})})
    proc = _run_job(cfg, tmp_path, ray_cluster)
    assert proc.returncode == 3, proc.stderr[-3000:]
    said = proc.stderr.strip().splitlines()[-1]
    assert said.startswith("batch_infer: all 4 rows of this run are written to s3://unreadable-out/run/")
    assert "rerun the job" in said

    proxy.fail_rate = 0.0
    parts = download_parts(s3, "s3://unreadable-out/run/", tmp_path / "parts")
    rows = duckdb.sql(f"SELECT id, status FROM read_parquet({[str(p) for p in parts]})").fetchall()
    assert len(parts) == 2 and len({r[0] for r in rows}) == 4 and {r[1] for r in rows} == {"success"}
    assert not s3.exists("s3://unreadable-out/run/_summary.json")


def test_the_summary_table_names_each_error_type_and_what_a_rerun_does():
    summary = {
        "run_id": "r",
        "output": "/o",
        "videos": 9,
        "success": 5,
        "error": 4,
        "processed_this_run": 9,
        "wall_seconds": 3.0,
        "videos_per_second_this_run": 3.0,
        "errors_by_type": {"DecodeError": 3, "ReadError": 1},
        "flops_ratio": None,
    }
    table = format_summary(summary)
    assert "  error           DecodeError: 3 (permanent: a rerun skips it)" in table
    assert "  error           ReadError: 1 (transient: a rerun retries it)" in table


def test_wall_seconds_run_to_the_summary_reading_the_parts_back_included(
    s3, proxy, ray_cluster, omni_checkpoint, clips, tmp_path
):
    """Under a slow store the summary's reading of the parts takes long: wall_seconds counts it (it ran to the
    summary's writing), and videos/s is this run's rows over that wall time."""
    _corpus(s3, "slowreads", clips, 3)
    delay = 1.0

    def slow_part_reads(method: str, path: str) -> bool:
        if method == "GET" and "/part-" in path:
            time.sleep(delay)
        return False  # never fail: only slow

    proxy.rule, proxy.fail_rate = slow_part_reads, 1.0
    cfg = config(
        "s3://slowreads/in/", "s3://slowreads-out/run/", str(omni_checkpoint), proxy.url, sink={"max_rows_per_part": 1}
    )
    start = time.monotonic()
    summary = run(cfg)
    elapsed = time.monotonic() - start
    assert summary["processed_this_run"] == 3
    assert summary["wall_seconds"] >= 3 * delay  # the three parts read back
    assert elapsed - summary["wall_seconds"] < 0.5 * delay, (elapsed, summary["wall_seconds"])
    assert summary["videos_per_second_this_run"] == round(3 / summary["wall_seconds"], 3)
    assert json.loads(s3.read("s3://slowreads-out/run/_summary.json"))["wall_seconds"] == summary["wall_seconds"]


def test_decode_summary_counts_each_batch_once(tmp_path):
    """Each row carries its generate() batch's compile figures: a batch of 3 that compiled one graph in 900 ms
    and a later batch of 2 that compiled nothing make 1 graph and 0.9 s; KV bytes are per video."""
    from pipeline.config import StorageConfig
    from pipeline.progress import RunClock
    from pipeline.rows import OK
    from pipeline.sink import encode_parquet, part_name, to_table
    from pipeline.storage import Storage
    from pipeline.summary import summarize

    def row(i, batch_rows, graphs, compile_ms):
        return {"id": f"v{i}", "uri": f"/in/{i}.mp4", "status": OK, "batch_rows": batch_rows, "decode_mode": "compiled",
                "decode_graphs": graphs, "decode_compile_ms": compile_ms, "kv_cache_bytes": 300,
                "kv_cache_bytes_unpruned": 1000, "flops_unpruned": 1.0, "flops_pruned": 0.5}  # fmt: skip

    rows = [row(i, 3, 1, 900.0) for i in range(3)] + [row(i, 2, 0, 0.0) for i in range(3, 5)]
    storage = Storage(StorageConfig())
    storage.write(str(tmp_path / part_name([r["id"] for r in rows])), encode_parquet(to_table(rows, "run")))
    summary = summarize(str(tmp_path), storage, {"run_id": "run"}, RunClock())
    assert summary["decode"] == {
        "rows_by_mode": {"compiled": 5},
        "graphs_compiled": 1,
        "compile_seconds": 0.9,
        "kv_cache_bytes_per_video": 300,
        "kv_cache_bytes_per_video_unpruned": 1000,
        "kv_cache_ratio": 0.3,
    }
    assert "compiled 5 rows; KV cache 0.0 MiB per video, 30.0% of unpruned; 1 graphs compiled in 0.9s" in (
        format_summary(summary)
    )
