"""docker-compose.yml, parsed and validated by a real Compose-spec parser (no engine needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import compose_spec
import pytest
import yaml

from pipeline.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw():
    """YAML anchors and merge keys resolved, as `docker compose` resolves them."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def spec(raw):
    return compose_spec.PyCompose.from_json(json.dumps(raw)).to_spec()


def test_compose_file_is_valid_and_has_the_services(spec):
    assert set(spec.services) == {"minio", "minio-init", "ray-head", "ray-worker", "submitter"}


def test_the_parser_rejects_what_compose_rejects(raw):
    broken = json.loads(json.dumps(raw))
    broken["services"]["ray-head"]["comand"] = broken["services"]["ray-head"].pop("command")
    with pytest.raises(ValueError, match="comand"):
        compose_spec.PyCompose.from_json(json.dumps(broken)).to_spec()


def test_minio_creates_the_buckets_the_demo_uses(raw):
    init = " ".join(raw["services"]["minio-init"]["command"])
    buckets = set(re.findall(r"local/([a-z0-9-]+)", init.split("mb", 1)[1]))
    demo = PipelineConfig.from_yaml(ROOT / "jobs/configs/compose-demo.yaml")
    used = {uri.removeprefix("s3://").split("/")[0] for uri in (demo.source.uri, demo.output, demo.model.checkpoint)}
    assert used <= buckets
    assert raw["services"]["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_ray_head_worker_and_submitter(raw):
    services = raw["services"]
    head, worker, submitter = services["ray-head"], services["ray-worker"], services["submitter"]
    assert "--head" in head["command"] and "127.0.0.1:8265:8265" in head["ports"]
    assert any(arg.startswith("--address=ray-head:") for arg in worker["command"])
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    command = " ".join(submitter["command"])
    assert "fastav submit --address http://ray-head:8265" in command and "--wait" in command
    assert "--working-dir none" in command  # the image holds the code: upload nothing (not site-packages)
    assert "python -m jobs.seed_demo" in command
    assert submitter["restart"] == "no"
    for service in (head, worker, submitter):  # one image, built from infra/Dockerfile
        assert service["build"]["dockerfile"] == "infra/Dockerfile" and service["image"] == "fastav:latest"
        assert service["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_no_literal_secrets_in_compose(raw):
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if "SECRET" in key or "PASSWORD" in key:
                assert str(value).startswith("${"), f"{name}.{key} must come from the environment"


def test_secure_by_default(raw):
    """Token auth on every Ray process (the job API runs arbitrary code), the token only from the environment
    (compose refuses to start without it), and every published port on loopback only."""
    for name in ("ray-head", "ray-worker", "submitter"):
        env = raw["services"][name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name
    for name, service in raw["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
