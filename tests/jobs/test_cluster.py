"""A real two-node Ray cluster on this machine: submit the batch job through the job API, against S3 over HTTP."""

from __future__ import annotations

import json
import os
import secrets
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


def _alive_nodes(dashboard: str, token: str | None = None) -> int:
    request = urllib.request.Request(f"{dashboard}/nodes?view=summary")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            summary = json.load(response)["data"]["summary"]
        return sum(1 for node in summary if node["raylet"]["state"] == "ALIVE")
    except Exception:
        return 0


def _own_ports() -> list[str]:
    # Every node's agents get free ports: another Ray instance on this machine holds the defaults.
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port")
    return [f"--{name}={_free_port()}" for name in (*names, "runtime-env-agent-port")]


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):  # worker first, then head; each takes its node's processes down
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(timeout=10)  # a graceful stop takes ~30 s; the test's cluster needs none
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _node_env(auth_mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env["RAY_AUTH_MODE"] = auth_mode
    # Cluster nodes run job entrypoints (`python -m ...`) with this interpreter's environment first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def two_node_cluster(tmp_path):
    """Head (dashboard, job API) and a worker node, each a `ray start --block` process with its own resources."""
    port, dashboard_port = _free_port(), _free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    env = _node_env("disabled")
    common = ["--block", "--num-cpus", "2", "--disable-usage-stats"]
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
                    [RAY, "start", *args, *common, *_own_ports()],
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
        _stop(processes)
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


@pytest.fixture
def token_cluster(tmp_path):
    """One node with Ray token auth on, as compose and KubeRay run it: (dashboard address, token)."""
    token = secrets.token_hex(16)
    port, dashboard_port = _free_port(), _free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    env = {**_node_env("token"), "RAY_AUTH_TOKEN": token}
    head = [
        "--head",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        "--include-dashboard=true",
    ]
    with open(tmp_path / "head.log", "w") as log:
        process = subprocess.Popen(
            [RAY, "start", *head, "--block", "--num-cpus", "1", "--disable-usage-stats", *_own_ports()],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            _wait(lambda: _alive_nodes(dashboard, token) >= 1, 120, "the head node")
            yield dashboard, token
        finally:
            _stop([process])
            current = Path("/tmp/ray/ray_current_cluster")
            if current.exists() and current.read_text().strip().endswith(f":{port}"):
                current.unlink()


def _fastav(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.timeout(600)
def test_submit_and_status_pass_the_auth_token_and_never_show_it(token_cluster, tmp_path):
    dashboard, token = token_cluster
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base["PYTHONPATH"] = str(ROOT)
    base["HOME"] = str(tmp_path)  # no ~/.ray/auth_token from elsewhere

    refused = _fastav("status", "fastav-nothing", "--address", dashboard, env=base)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (
        f"fastav: the Ray cluster at {dashboard} requires an auth token: set RAY_AUTH_TOKEN or "
        "RAY_AUTH_TOKEN_PATH (`ray get-auth-token` on the head prints it)"
    )
    wrong = _fastav("status", "fastav-nothing", "--address", dashboard, env={**base, "RAY_AUTH_TOKEN": "0" * 32})
    assert wrong.returncode == 2 and "rejected the auth token" in wrong.stderr and "Traceback" not in wrong.stderr

    # A job that fails its preflight (no checkpoint): auth is what is tested, and it stops in seconds.
    config = {"source": {"uri": str(tmp_path)}, "output": str(tmp_path / "out"), "model": {"checkpoint": "/nowhere"}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    token_file = tmp_path / "ray-token"
    token_file.write_text(token + "\n")
    with_token = {**base, "RAY_AUTH_TOKEN_PATH": str(token_file)}
    submission_id = f"fastav-auth-{secrets.token_hex(4)}"
    submit = [
        "submit",
        "--config",
        str(tmp_path / "job.yaml"),
        "--address",
        dashboard,
        "--submission-id",
        submission_id,
    ]
    submitted = _fastav(*submit, "--wait", "--timeout", "240", env=with_token)
    assert submitted.returncode == 1, submitted.stderr[-2000:]  # submitted and run; the job itself failed
    assert submitted.stdout.split()[1] == submission_id
    assert "batch_infer: model.checkpoint /nowhere: no config.json" in submitted.stderr
    status = _fastav("status", submission_id, "--address", dashboard, "--logs", env={**base, "RAY_AUTH_TOKEN": token})
    assert status.returncode == 0 and json.loads(status.stdout.splitlines()[0])["status"] == "FAILED"
    again = _fastav(*submit, env=with_token)
    assert again.returncode == 2 and again.stderr.strip() == (
        f"fastav: a job with this submission id already exists on {dashboard}; pick another id"
    )
    for output in (refused, wrong, submitted, status, again):
        assert token not in output.stdout + output.stderr
