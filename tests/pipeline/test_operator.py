"""What an operator sees and keeps: only our lines on the terminal (Ray's own output in its log file, one line of
ours per event), no Ray left behind by a killed driver, and parts that land steadily so that a kill loses little."""

from __future__ import annotations

import itertools
import os
import re
import signal
import statistics
import time
from pathlib import Path

import duckdb
import psutil
import pytest

from pipeline.config import PipelineConfig
from pipeline.graph import run
from pipeline.ray_output import ray_note, raylet_events
from pipeline.sink import PartWriter
from pipeline.storage import Storage
from tests.jobrun import batch_infer, clip_corpus, config_file, start_batch_infer, wait_for
from tests.pipeline.test_graph import config

# Every line on stderr is a log line of ours (logging.basicConfig's format in jobs/batch_infer.py) ...
OUR_LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) (pipeline|fastav|jobs)(\.\w+)*: \S.*"
)
# ... and every line on stdout belongs to the summary table (jobs/batch_infer.py prints format_summary's).
SUMMARY_LINE = re.compile(r"run \S+ -> .+|  [a-z][A-Za-z ]+ {2,}\S.*")

RAYLET_DIED = (
    "A worker died or was killed while executing a task by an unexpected system error. To troubleshoot the problem, "
    "check the logs for the dead worker. Lease ID: 0100 Worker ID: 9bc1 Node ID: 99fe Worker IP address: 192.0.2.2 "
    "Worker port: 40553 Worker PID: 31372 Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly "
    "exits with a connection error code 2. End of file. Some common causes include: (1) the process was killed by "
    "the OOM killer due to high memory usage, (2) ray stop --force was called, or (3) the worker crashed."
)
RAYLET_RETRY = (
    "Task MapWorker(MapBatches(InferActor)).submit failed. There are infinite retries remaining, so the task will be "
    "retried. Error: The actor is temporarily unavailable: RpcError: RPC error: recvmsg:Connection reset by peer"
)
MEMORY_FINAL = """

Operator 'MapBatches(DecodeStage)->MapBatches(PreprocessStage)' used
up to 536.5MiB of memory per worker. The configured logical memory was
64.0MiB. To avoid out-of-memory errors, set `memory=703180800`
(670.6MiB) in the appropriate function or method call.
"""


def foreign_lines(stdout: str, stderr: str) -> list[str]:
    """Lines on the terminal that are not ours."""
    return [line for line in stderr.splitlines() if line and not OUR_LOG_LINE.fullmatch(line)] + [
        line for line in stdout.splitlines() if line and not SUMMARY_LINE.fullmatch(line)
    ]


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _infer_actors(pid: int) -> list[psutil.Process]:
    """Inference actors (Ray titles them `ray::MapWorker(MapBatches(InferActor))...`) among pid's descendants only:
    never another test's or another user's."""
    actors = []
    for process in _descendants(pid):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::") and "InferActor" in title:
            actors.append(process)
    return actors


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- Ray's output: one line of ours per event -------------------------------------------------------------------


def test_ray_messages_become_one_line_each():
    assert raylet_events([RAYLET_DIED, RAYLET_RETRY, RAYLET_RETRY]) == [
        "inference actor restarted after a crash (worker pid 31372, SYSTEM_ERROR); its 2 unfinished batches run again"
    ]
    assert raylet_events([RAYLET_DIED]) == [
        "a Ray worker died (worker pid 31372, SYSTEM_ERROR); Ray restarts what it was running"
    ]
    # between batches no task fails: the actor table says whose worker it was
    assert raylet_events([RAYLET_DIED], restarted={"inference actor"}) == [
        "inference actor restarted after a crash (worker pid 31372, SYSTEM_ERROR)"
    ]
    _key, note = ray_note(MEMORY_FINAL)
    assert note == (
        "decode/preprocess workers used up to 536.5MiB of memory each, more than decode.memory_mb reserves: "
        "set decode.memory_mb to 671 or more"
    )
    assert ray_note("Found 1 issues. To disable issue detection, run DataContext...") is None
    assert ray_note("Something odd.\nIt goes on for lines\nand lines.") == (
        "Something odd. It goes on for lines and lines.",
        "Ray: Something odd.",
    )


def test_the_embedded_default_prints_only_our_lines(tmp_path):
    """`python -m jobs.batch_infer` with nothing else, as the quick start runs it: a local Ray of its own."""
    proc = batch_infer("--workdir", str(tmp_path / "default"), env={"RAY_ADDRESS": None}, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert foreign_lines(proc.stdout, proc.stderr) == [], proc.stdout + proc.stderr
    assert "videos          8 (8 success, 0 error)" in proc.stdout
    where = re.search(r"Ray's own messages go to (\S+)", proc.stderr)
    assert where and "/logs/" in where[1], proc.stderr
    assert "core_worker.cc" in Path(where[1]).read_text()  # Ray's C++ line went to the file, not the terminal


def test_an_actor_crash_and_a_memory_warning_are_one_line_each(ray_cluster, omni_checkpoint, clips, tmp_path):
    output = tmp_path / "out"
    cfg = config(
        str(clip_corpus(tmp_path, clips, 8)),
        str(output),
        str(omni_checkpoint),
        decode={"batch_size": 1, "memory_mb": 64},  # less than a decode worker uses: Ray Data warns
        infer={"batch_size": 1, "max_new_tokens": 60},
        sink={"max_rows_per_part": 1},
    )
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        job = start_batch_infer(
            "--config", str(config_file(cfg, tmp_path)), env={"RAY_ADDRESS": ray_cluster}, stdout=stdout, stderr=stderr
        )
        try:
            # our cluster's actors are this process's descendants
            victims = wait_for(lambda: list(output.glob("part-*")) and _infer_actors(os.getpid()), job, timeout=300)
            assert victims, err.read_text()[-3000:]
            for victim in victims:
                victim.kill()
            job.wait(timeout=400)
        finally:
            if job.poll() is None:
                job.kill()
    stdout_text, stderr_text = out.read_text(), err.read_text()
    assert job.returncode == 0, stderr_text[-3000:]
    assert foreign_lines(stdout_text, stderr_text) == [], stdout_text + stderr_text
    crash = [line for line in stderr_text.splitlines() if "inference actor restarted after a crash" in line]
    memory = [line for line in stderr_text.splitlines() if "set decode.memory_mb to" in line]
    assert len(crash) == 1, stderr_text
    assert len(memory) == 1, stderr_text
    for noise in ("A worker died", "(raylet)", "core_worker", "issue detection", "MiB in the appropriate"):
        assert noise not in stdout_text + stderr_text, noise
    assert "videos          8 (8 success, 0 error)" in stdout_text


# -- a killed driver leaves no Ray behind ------------------------------------------------------------------------


def test_a_killed_driver_leaves_no_ray_behind(omni_checkpoint, clips, tmp_path):
    """kill -9 of the driver of a local run (no RAY_ADDRESS): every process of its Ray is gone within 10 s."""
    cfg = config(
        str(clip_corpus(tmp_path, clips, 8)),
        str(tmp_path / "out"),
        str(omni_checkpoint),
        decode={"batch_size": 1},
        infer={"batch_size": 1, "max_new_tokens": 60},
    )
    log = tmp_path / "job.log"
    with open(log, "w") as sink:
        job = start_batch_infer(
            "--config", str(config_file(cfg, tmp_path)), env={"RAY_ADDRESS": None}, stdout=sink, stderr=sink
        )
    ray_processes: list[psutil.Process] = []
    try:
        assert wait_for(lambda: _infer_actors(job.pid), job, timeout=300), log.read_text()[-3000:]
        ray_processes = _descendants(job.pid)  # GCS, raylet, dashboard and agents, workers, actors, watchdog
        names = " ".join(p.name() for p in ray_processes)
        assert "raylet" in names and "gcs_server" in names, names
        job.kill()
        job.wait(timeout=30)
        killed = time.monotonic()
        while any(_alive(p) for p in ray_processes) and time.monotonic() - killed < 10:
            time.sleep(0.1)
        left = [f"{p.pid} {p.name()}" for p in ray_processes if _alive(p)]
        assert left == [], f"{len(left)} of {len(ray_processes)} Ray processes outlived the driver by 10 s: {left}"
    finally:
        if job.poll() is None:
            job.kill()
        for process in ray_processes:  # whatever a failure left: not for the next test to share cores with
            if _alive(process):
                process.kill()


# -- parts land steadily ----------------------------------------------------------------------------------------


def test_a_part_is_written_after_max_seconds_also_when_no_rows_follow(tmp_path):
    writer = PartWriter(str(tmp_path), Storage(), "r", 100, 0.2)
    writer.add([{"id": "a", "uri": "/v/a.mp4", "status": "ok"}])
    deadline = time.monotonic() + 5
    while not list(tmp_path.glob("part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(tmp_path.glob("part-*.parquet"))) == 1 and writer.rows_written == 1
    writer.close()
    assert writer.rows_written == 1


def test_the_old_part_keys_still_work_as_sink_keys():
    base = {"source": {"uri": "/v"}, "output": "/o", "model": {"checkpoint": "/c"}}
    old = PipelineConfig.model_validate({**base, "rows_per_file": 8, "flush_seconds": 30})
    assert (old.sink.max_rows_per_part, old.sink.max_seconds_per_part) == (8, 30)
    assert PipelineConfig.model_validate(base).sink.max_seconds_per_part == 60  # about a minute at risk
    with pytest.raises(ValueError, match=r"keep sink\.max_rows_per_part"):
        PipelineConfig.model_validate({**base, "rows_per_file": 8, "sink": {"max_rows_per_part": 4}})


def test_parts_land_steadily_and_a_killed_driver_loses_at_most_a_part(ray_cluster, omni_checkpoint, clips, tmp_path):
    """12 clips, one per model batch, decoded four at a time, two rows per part: each part lands as its rows are
    done, not in bursts of a decode block; a kill -9 after the third part loses at most the rows of one part, and
    the rerun does only the rest."""
    output = tmp_path / "out"
    cfg = config(
        str(clip_corpus(tmp_path, clips, 12)),
        str(output),
        str(omni_checkpoint),
        decode={"batch_size": 4},
        infer={"batch_size": 1, "max_new_tokens": 64},
        sink={"max_rows_per_part": 2},
        progress_seconds=0.05,
    )
    log = tmp_path / "job.log"
    landed: dict[str, float] = {}

    def three_parts() -> bool:
        for part in output.glob("part-*.parquet"):
            landed.setdefault(part.name, time.monotonic())
        return len(landed) >= 3

    with open(log, "w") as sink:
        job = start_batch_infer(
            "--config", str(config_file(cfg, tmp_path)), env={"RAY_ADDRESS": ray_cluster}, stdout=sink, stderr=sink
        )
    try:
        assert wait_for(three_parts, job, timeout=300, step=0.02), log.read_text()[-3000:]
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    times = sorted(landed.values())
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    generate_s = statistics.median(
        r[0] / 1000 for r in duckdb.sql(f"SELECT generate_ms FROM read_parquet('{output}/part-*.parquet')").fetchall()
    )
    # a part follows the last by two rows of inference; a burst (the parts of one decode block landing together)
    # is milliseconds apart. The floor is half of one row's generate(), measured in this run, not a share of the
    # longest gap: one gap is often ~5 s, Ray starting this job's third and fourth worker processes when the CPU
    # stages first run side by side, and says nothing of bursts
    floor = max(0.04, 0.5 * generate_s)
    assert all(gap >= floor for gap in gaps), f"parts landed in a burst: {gaps} s apart, generate() {generate_s:.2f} s"
    written = [r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{output}/part-*.parquet')").fetchall()]
    assert len(written) == 2 * len(landed) and len(set(written)) == len(written)
    received = [int(n) for n in re.findall(r"progress: (\d+)/12 videos", log.read_text())]
    assert max(received, default=0) - len(written) < 2  # rows at the driver not yet in a part: under one part

    again = run(cfg.model_copy(update={"run_id": "rerun"}))
    ids = [r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{output}/part-*.parquet')").fetchall()]
    assert len(ids) == len(set(ids)) == 12
    assert again["processed_this_run"] == 12 - len(written) and again["skipped_done"] == len(written)
