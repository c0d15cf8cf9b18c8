import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Fake credentials for the moto server, set before any Ray worker starts so workers inherit them.
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastav import testing
from fastav import testing as tiny

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, object]:
    """Tiny random-weight checkpoints on disk, one per supported family."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "qwen2": tiny.save_qwen2(root / "qwen2"),
        "llama": tiny.save_llama(root / "llama"),
        "omni": tiny.save_omni_thinker(root / "omni"),
    }


# Real parts for pipeline and job tests: a moto S3 server over HTTP, a local Ray cluster, mp4 clips, a tiny
# Qwen2.5-Omni checkpoint with its processor.


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
def s3(s3_endpoint):
    from pipeline.config import StorageConfig
    from pipeline.storage import Storage

    return Storage(StorageConfig(endpoint_url=s3_endpoint))


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def omni_checkpoint(tmp_path_factory) -> Path:
    return testing.save_omni_thinker(tmp_path_factory.mktemp("ckpt") / "tiny-omni", processor=True)


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints with processors of the other video families (Qwen3-Omni, Qwen3-VL dense and MoE,
    Qwen2.5-VL)."""
    from fastav.testing import qwen3_omni, vl

    root = tmp_path_factory.mktemp("family-checkpoints")
    return {
        "qwen3_omni": qwen3_omni.save_qwen3_omni(root / "qwen3_omni", processor=True),
        "qwen3_vl": vl.save_qwen3_vl(root / "qwen3_vl", processor=True),
        "qwen3_vl_moe": vl.save_qwen3_vl(root / "qwen3_vl_moe", moe=True, processor=True),
        "qwen2_5_vl": vl.save_qwen2_5_vl(root / "qwen2_5_vl", processor=True),
    }


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, bytes]:
    """Four good clips with audio plus the broken inputs, by file name."""
    from pipeline import synthetic

    paths = synthetic.write_corpus(tmp_path_factory.mktemp("clips"), count=4, seconds=2.0)
    good = {p.name: p.read_bytes() for p in paths}
    return {**good, **synthetic.broken_files(next(iter(good.values())))}
