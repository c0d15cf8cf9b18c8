"""Create the RayJob of one scheduled run through the Kubernetes API (what infra/k8s/schedule.yaml's CronJob runs).

    python -m jobs.k8s_schedule --template /templates/rayjob.yaml [--slot-minutes 60] [--keep 14]

- The run is named after its slot (UTC, floored to --slot-minutes): RayJob `fastav-batch-YYYYMMDD-HHMM`, and
  the same `--run-id` for the job. A doubled or retried trigger for that slot gets HTTP 409 and creates nothing.
- A slot is skipped while an earlier scheduled RayJob has not finished: two runs on one output never overlap.
- Finished scheduled RayJobs beyond the newest --keep are deleted (KubeRay allows no TTL on a shared cluster).
In a pod it authenticates with its service account; --api, --token-file, --ca-file and --namespace override.
Exit codes: 0 created or nothing to do, 2 a configuration or API problem (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LABEL = "fastav/trigger=schedule"
FINISHED = {"Complete", "Failed"}  # status.jobDeploymentStatus of a RayJob that will not run again
PREFIX = "fastav-batch-"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Kubernetes:
    def __init__(self, api: str, token: str, namespace: str, ca_file: str | None) -> None:
        self.api, self.token, self.namespace = api.rstrip("/"), token, namespace
        self.context = ssl.create_default_context(cafile=ca_file) if api.startswith("https") else None

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.api}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            with contextlib.suppress(ValueError):  # the API answers a Status object; anything else as is
                detail = json.loads(detail).get("message", detail)
            raise ApiError(error.code, detail.strip().splitlines()[0] if detail.strip() else error.reason) from None

    def _rayjobs(self, suffix: str = "") -> str:
        return f"/apis/ray.io/v1/namespaces/{self.namespace}/rayjobs{suffix}"

    def list_scheduled(self) -> list[dict]:
        return self._call("GET", self._rayjobs(f"?labelSelector={urllib.request.quote(LABEL)}"))["items"]

    def create(self, rayjob: dict) -> dict:
        return self._call("POST", self._rayjobs(), rayjob)

    def delete(self, name: str) -> None:
        self._call("DELETE", self._rayjobs(f"/{name}"))


def slot_of(now: dt.datetime, minutes: int) -> str:
    floored = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=(now.hour * 60 + now.minute) % minutes)
    return floored.strftime("%Y%m%d-%H%M")


def rayjob_for(template: dict, slot: str) -> dict:
    rayjob = json.loads(json.dumps(template))  # a deep copy
    rayjob.setdefault("metadata", {})["name"] = PREFIX + slot
    rayjob["metadata"].setdefault("labels", {})["fastav/trigger"] = "schedule"
    rayjob["spec"]["entrypoint"] += f" --run-id {slot}"
    return rayjob


def finished(rayjob: dict) -> bool:
    return (rayjob.get("status") or {}).get("jobDeploymentStatus") in FINISHED


def schedule(k8s: Kubernetes, template: dict, slot: str, keep: int) -> str:
    """Create this slot's RayJob unless one is running or it exists; prune old finished ones. Returns what it did."""
    scheduled = sorted(k8s.list_scheduled(), key=lambda r: r["metadata"].get("creationTimestamp", ""))
    running = [r["metadata"]["name"] for r in scheduled if not finished(r)]
    name = PREFIX + slot
    if name in {r["metadata"]["name"] for r in scheduled}:
        did = f"{name} exists already: nothing to do for this slot"
    elif running:
        did = f"skipped slot {slot}: {', '.join(running)} has not finished"
    else:
        try:
            k8s.create(rayjob_for(template, slot))
            did = f"created RayJob {name}"
        except ApiError as error:
            if error.status != 409:
                raise
            did = f"{name} exists already: nothing to do for this slot"
    done = [r["metadata"]["name"] for r in scheduled if finished(r)]
    for old in done[: max(0, len(done) - keep)]:
        k8s.delete(old)
        did += f"; deleted finished {old}"
    return did


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", type=Path, required=True, help="RayJob YAML (metadata.name is filled in)")
    parser.add_argument("--slot-minutes", type=int, default=60, help="runs are named after the slot, floored")
    parser.add_argument("--keep", type=int, default=14, help="finished scheduled RayJobs to keep")
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    parser.add_argument("--api", default=f"https://{host}:{port}" if host else None)
    parser.add_argument("--token-file", type=Path, default=SERVICE_ACCOUNT / "token")
    parser.add_argument("--ca-file", default=str(SERVICE_ACCOUNT / "ca.crt"))
    parser.add_argument("--namespace", help="default: the service account's namespace")
    args = parser.parse_args(argv)
    try:
        if args.api is None:
            raise ApiError(0, "no Kubernetes API: not in a pod (KUBERNETES_SERVICE_HOST unset) and no --api")
        namespace = args.namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()
        template = yaml.safe_load(args.template.read_text())
        k8s = Kubernetes(args.api, args.token_file.read_text().strip(), namespace, args.ca_file)
        print(
            f"k8s_schedule: {schedule(k8s, template, slot_of(dt.datetime.now(dt.UTC), args.slot_minutes), args.keep)}"
        )
        return 0
    except (ApiError, OSError, yaml.YAMLError, KeyError) as error:
        print(f"k8s_schedule: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
