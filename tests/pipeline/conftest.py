"""Real parts for pipeline tests: a moto S3 server over HTTP, a local Ray cluster, mp4 clips, a tiny checkpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastav import testing
from pipeline import synthetic
from pipeline.config import StorageConfig
from pipeline.storage import Storage


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """moto's S3 server as a separate process on loopback; credentials come from the environment."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        server.kill()
        raise RuntimeError(f"moto server did not start: {log.read_text()}")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="session")
def s3(s3_endpoint) -> Storage:
    return Storage(StorageConfig(endpoint_url=s3_endpoint))


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def omni_checkpoint(tmp_path_factory) -> Path:
    return testing.save_omni_thinker(tmp_path_factory.mktemp("ckpt") / "tiny-omni", processor=True)


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, bytes]:
    """Four good clips with audio plus the broken inputs, by file name."""
    paths = synthetic.write_corpus(tmp_path_factory.mktemp("clips"), count=4, seconds=2.0)
    good = {p.name: p.read_bytes() for p in paths}
    return {**good, **synthetic.broken_files(next(iter(good.values())))}


def write_local(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory
