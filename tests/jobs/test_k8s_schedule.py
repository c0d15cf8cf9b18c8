"""The scheduled-run creator against a Kubernetes API over HTTP (a small in-memory API server for RayJobs).

It checks what the API server would: the bearer token, name conflicts (409), label selectors; and every RayJob
it receives against KubeRay's schema and rules.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from jobs.k8s_schedule import Kubernetes, schedule, slot_of
from tests.infra.kuberay import validate

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "service-account-token"
NAMESPACE = "batch"


class FakeApi:
    """RayJobs of one namespace, as the API server stores them."""

    def __init__(self) -> None:
        self.rayjobs: dict[str, dict] = {}
        self.received: list[dict] = []
        self.clock = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def finish(self, name: str, status: str = "Complete") -> None:
        self.rayjobs[name]["status"] = {"jobDeploymentStatus": status}

    def _handler(self):
        api = self
        prefix = f"/apis/ray.io/v1/namespaces/{NAMESPACE}/rayjobs"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> tuple[str, dict] | None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._reply(401, {"kind": "Status", "message": "Unauthorized"})
                    return None
                url = urlsplit(self.path)
                if not url.path.startswith(prefix):
                    self._reply(404, {"kind": "Status", "message": f"no route {url.path}"})
                    return None
                return url.path[len(prefix) :].lstrip("/"), parse_qs(url.query)

            def do_GET(self) -> None:
                if (route := self._route()) is None:
                    return
                _, query = route
                wanted = dict(s.split("=", 1) for s in query.get("labelSelector", [""])[0].split(",") if s)
                items = [
                    r
                    for r in api.rayjobs.values()
                    if all(r["metadata"]["labels"].get(k) == v for k, v in wanted.items())
                ]
                self._reply(200, {"kind": "RayJobList", "items": items})

            def do_POST(self) -> None:
                if self._route() is None:
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.received.append(body)
                name = body["metadata"]["name"]
                if name in api.rayjobs:
                    self._reply(409, {"kind": "Status", "message": f'rayjobs.ray.io "{name}" already exists'})
                    return
                api.clock += 1
                body["metadata"]["creationTimestamp"] = f"2026-11-26T00:00:{api.clock:02d}Z"
                api.rayjobs[name] = body
                self._reply(201, body)

            def do_DELETE(self) -> None:
                if (route := self._route()) is None:
                    return
                name, _ = route
                api.rayjobs.pop(name)
                self._reply(200, {"kind": "Status", "status": "Success"})

        return Handler


@pytest.fixture
def api():
    fake = FakeApi()
    yield fake
    fake.server.shutdown()


@pytest.fixture
def template() -> dict:
    (config_map,) = [
        d
        for d in yaml.safe_load_all((ROOT / "infra/k8s/schedule.yaml").read_text())
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "fastav-rayjob-template"
    ]
    return yaml.safe_load(config_map["data"]["rayjob.yaml"])


def test_one_rayjob_per_slot_never_two_at_once_and_old_ones_pruned(api, template):
    k8s = Kubernetes(api.url, TOKEN, NAMESPACE, None)
    assert schedule(k8s, template, "20261124-0200", keep=2) == "created RayJob fastav-batch-20261124-0200"
    assert schedule(k8s, template, "20261124-0200", keep=2).endswith("exists already: nothing to do for this slot")
    assert "skipped slot 20261125-0200: fastav-batch-20261124-0200 has not finished" in schedule(
        k8s, template, "20261125-0200", keep=2
    )
    assert list(api.rayjobs) == ["fastav-batch-20261124-0200"]
    for day in ("24", "25", "26", "27"):
        if f"fastav-batch-202611{day}-0200" in api.rayjobs:
            api.finish(f"fastav-batch-202611{day}-0200", "Complete" if day != "26" else "Failed")
        schedule(k8s, template, f"202611{int(day) + 1}-0200", keep=2)
    # Four finished runs and one running: the two newest finished ones are kept.
    assert sorted(api.rayjobs) == [
        "fastav-batch-20261126-0200",
        "fastav-batch-20261127-0200",
        "fastav-batch-20261128-0200",
    ]
    for body in api.received:
        assert validate(body) == [], validate(body)
        slot = body["metadata"]["name"].removeprefix("fastav-batch-")
        assert body["spec"]["entrypoint"].endswith(f"--run-id {slot}")
        assert body["metadata"]["labels"]["fastav/trigger"] == "schedule"


def test_the_entrypoint_as_the_cronjob_runs_it(api, tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    (config_map,) = [
        d for d in yaml.safe_load_all((ROOT / "infra/k8s/schedule.yaml").read_text()) if d["kind"] == "ConfigMap"
    ]
    template = tmp_path / "rayjob.yaml"  # what the CronJob mounts at /templates/rayjob.yaml
    template.write_text(config_map["data"]["rayjob.yaml"])
    args = [sys.executable, "-m", "jobs.k8s_schedule", "--template", str(template)]
    common = ["--api", api.url, "--namespace", NAMESPACE, "--slot-minutes", "60"]
    done = subprocess.run(
        [*args, *common, "--token-file", str(tmp_path / "token")], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    slot = slot_of(dt.datetime.now(dt.UTC), 60)
    assert done.stdout.strip() in (
        f"k8s_schedule: created RayJob fastav-batch-{slot}",
        # the hour turned between the two lines above
        f"k8s_schedule: created RayJob fastav-batch-{slot_of(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), 60)}",
    )
    (tmp_path / "wrong").write_text("nope")
    refused = subprocess.run(
        [*args, *common, "--token-file", str(tmp_path / "wrong")], cwd=ROOT, capture_output=True, text=True
    )
    assert refused.returncode == 2 and refused.stderr.strip() == "k8s_schedule: HTTP 401: Unauthorized"


def test_slots_floor_to_their_length():
    at = dt.datetime(2026, 11, 26, 2, 47, 13, tzinfo=dt.UTC)
    assert slot_of(at, 60) == "20261126-0200"
    assert slot_of(at, 15) == "20261126-0245"
    assert slot_of(at, 24 * 60) == "20261126-0000"
