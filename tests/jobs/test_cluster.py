"""A real two-node Ray cluster on this machine: submit the batch job through the job API, against S3 over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
import yaml

from jobs.cli import main as fastav_main
from tests.conftest import _free_port

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")  # the CLI of this interpreter's Ray, activated venv or not


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def _alive_nodes(dashboard: str) -> int:
    try:
        with urllib.request.urlopen(f"{dashboard}/nodes?view=summary", timeout=5) as response:
            summary = json.load(response)["data"]["summary"]
        return sum(1 for node in summary if node["raylet"]["state"] == "ALIVE")
    except Exception:
        return 0


@pytest.fixture
def two_node_cluster(tmp_path):
    """Head (dashboard, job API) and a worker node, each a `ray start --block` process with its own resources."""
    port, dashboard_port = _free_port(), _free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    # Cluster nodes run job entrypoints (`python -m ...`) with this interpreter's environment first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    common = ["--block", "--num-cpus", "2", "--disable-usage-stats"]

    def own_ports() -> list[str]:
        # Every node's agents get free ports: another Ray instance on this machine holds the defaults.
        names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port")
        return [f"--{name}={_free_port()}" for name in (*names, "runtime-env-agent-port")]

    processes = []
    logs = []
    try:
        for name, args in (
            (
                "head",
                [
                    "--head",
                    f"--port={port}",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dashboard_port}",
                    "--include-dashboard=true",
                    '--resources={"head_node": 1}',
                ],
            ),
            ("worker", [f"--address=127.0.0.1:{port}", '--resources={"worker_node": 1}']),
        ):
            log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed in teardown
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [RAY, "start", *args, *common, *own_ports()],
                    env=env,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )
            if name == "head":
                _wait(lambda: _alive_nodes(dashboard) >= 1, 120, "the head node")
        _wait(lambda: _alive_nodes(dashboard) >= 2, 120, "the worker node")
        yield dashboard
    finally:
        for process in reversed(processes):  # worker first, then head; each takes its node's processes down
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        for log in logs:
            log.close()
        # `ray start` records its cluster for later ray.init() calls; a killed cluster must not be found again.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.mark.timeout(600)
def test_submit_batch_job_to_two_node_cluster(
    two_node_cluster, s3, s3_endpoint, omni_checkpoint, clips, tmp_path, capsys
):
    for bucket in ("cluster-videos", "cluster-models", "cluster-results"):
        s3.s3.create_bucket(Bucket=bucket)
    good = [name for name in sorted(clips) if name.startswith("clip_")]
    for i in range(8):
        s3.write(f"s3://cluster-videos/in/video_{i}.mp4", clips[good[i % len(good)]])
    s3.write("s3://cluster-videos/in/empty.mp4", b"")
    for path in omni_checkpoint.iterdir():
        s3.write(f"s3://cluster-models/tiny-omni/{path.name}", path.read_bytes())

    config = {
        "source": {"uri": "s3://cluster-videos/in/"},
        "output": "s3://cluster-results/run/",
        "storage": {"endpoint_url": s3_endpoint},
        "model": {"checkpoint": "s3://cluster-models/tiny-omni", "cache_dir": str(tmp_path / "model-cache")},
        "decode": {"num_frames": 4, "batch_size": 1, "num_cpus": 0.5, "memory_mb": 256},
        "infer": {"batch_size": 2, "num_actors": 2, "num_cpus": 1, "max_new_tokens": 4},
        "fastav": {"global_layer": 3},
    }
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(config))

    code = fastav_main(
        ["submit", "--config", str(config_file), "--address", two_node_cluster, "--wait", "--timeout", "480"]
    )
    assert code == 0
    submitted = capsys.readouterr().out
    submission_id = submitted.split()[1]
    assert "AWS_SECRET_ACCESS_KEY" in submitted and os.environ["AWS_SECRET_ACCESS_KEY"] not in submitted
    assert fastav_main(["status", submission_id, "--address", two_node_cluster]) == 0
    status = json.loads(capsys.readouterr().out.splitlines()[0])
    assert status["status"] == "SUCCEEDED" and status["submission_id"] == submission_id

    parts = []
    for obj in s3.list("s3://cluster-results/run/"):
        if obj.uri.rsplit("/", 1)[-1].startswith("part-"):
            path = tmp_path / obj.uri.rsplit("/", 1)[-1]
            path.write_bytes(s3.read(obj.uri))
            parts.append(f"'{path}'")
    table = duckdb.sql(
        f"SELECT status, error_type, decode_node, infer_node FROM read_parquet([{', '.join(parts)}])"
    ).fetchall()
    assert len(table) == 9
    assert sorted(r[1] for r in table if r[0] == "error") == ["EmptyObject"]
    nodes = {r[2] for r in table if r[2]} | {r[3] for r in table if r[3]}
    assert len(nodes) == 2, f"work ran on {nodes}, expected both nodes"
