"""KubeRay and Kubernetes manifests: core kinds against the Kubernetes schemas (kubernetes-validate, offline,
strict); RayCluster / RayJob / RayCronJob against KubeRay v1.7.0's CRD schemas (unknown fields rejected) and
the rules its operator enforces in code (tests/infra/kuberay.py); pod templates as Kubernetes Pods."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from jobs.k8s_schedule import rayjob_for
from pipeline.config import PipelineConfig
from tests.infra.kuberay import validate

ROOT = Path(__file__).resolve().parents[2]
K8S = "1.33"
MANIFESTS = sorted((ROOT / "infra/k8s").glob("*.yaml"))


def documents() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> list[dict]:
    return [doc for doc in documents() if doc["kind"] == kind]


def config_map(name: str) -> dict:
    (found,) = [d for d in by_kind("ConfigMap") if d["metadata"]["name"] == name]
    return found


def validate_pod_template(template: dict) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": template["spec"]}
    kubernetes_validate.validate(pod, K8S, strict=True)


@pytest.mark.parametrize(
    "doc",
    [d for d in documents() if not d["apiVersion"].startswith("ray.io/")],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_core_manifests_match_the_kubernetes_schemas(doc):
    kubernetes_validate.validate(doc, K8S, strict=True)


def check_rayjob(job: dict) -> None:
    assert validate(job) == [], validate(job)
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m jobs.batch_infer --config /config/job.yaml")
    cluster = by_kind("RayCluster")[0]["metadata"]["name"]
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster}  # the shared, autoscaled cluster


@pytest.mark.parametrize(
    "doc",
    [d for d in documents() if d["apiVersion"].startswith("ray.io/")],
    ids=lambda d: f"{d['kind']}/{d['metadata'].get('name') or d['metadata']['generateName']}",
)
def test_kuberay_objects_are_what_kuberay_1_7_accepts(doc):
    assert validate(doc) == []


SHARED_CLUSTER_JOB = {
    "apiVersion": "ray.io/v1",
    "kind": "RayJob",
    "metadata": {"name": "fastav-batch-manual"},
    "spec": {
        "clusterSelector": {"ray.io/cluster": "fastav"},
        "entrypoint": "python -m x",
        "submissionMode": "K8sJobMode",
    },
}


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"ttlSecondsAfterFinished": 86400}, "requires shutdownAfterJobFinishes"),
        ({"backoffLimit": 2}, "backoffLimit must be 0 or unset with clusterSelector"),
        ({"shutdownAfterJobFinishes": True}, "shut down the shared cluster"),
        ({"submissionMode": "SidecarMode"}, "SidecarMode"),
        (
            {"deletionStrategy": {"onSuccess": {"policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteNone"}}},
            "shared",
        ),
        ({"entrypointz": "x"}, "Additional properties are not allowed"),
        ({"activeDeadlineSeconds": "a day"}, "is not of type 'integer'"),
    ],
)
def test_the_validator_refuses_what_kuberay_refuses(change, refusal):
    job = {**SHARED_CLUSTER_JOB, "spec": {**SHARED_CLUSTER_JOB["spec"], **change}}
    assert any(refusal in error for error in validate(job)), validate(job)
    assert validate(SHARED_CLUSTER_JOB) == []


def test_token_auth_needs_a_recent_ray():
    (cluster,) = by_kind("RayCluster")
    old = {**cluster, "spec": {**cluster["spec"], "rayVersion": "2.50.0"}}
    assert "authOptions.mode token requires rayVersion >= 2.52.0" in validate(old)
    typo = json.loads(json.dumps(cluster))
    typo["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resourcess"] = {}
    assert any("resourcess" in error for error in validate(typo))


def test_raycluster_head_runs_only_the_driver():
    (cluster,) = by_kind("RayCluster")
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["num-gpus"] == "0"
    validate_pod_template(head["template"])
    (gpu,) = spec["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    validate_pod_template(gpu["template"])
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["rayVersion"].startswith("2.60")
    mounts = {m["mountPath"] for m in head["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/config" in mounts  # the driver runs on the head and reads /config/job.yaml
    worker_mounts = {m["mountPath"]: m["name"] for m in gpu["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/cache" in worker_mounts  # where actors download the checkpoint: a volume, not the container layer


def test_job_config_in_the_configmap_is_valid():
    config = PipelineConfig.model_validate(yaml.safe_load(config_map("fastav-job-config")["data"]["job.yaml"]))
    assert config.infer.num_gpus == 1 and config.source.uri.startswith("s3://")
    assert config.model.cache_dir.startswith("/cache")


def test_each_manual_create_is_a_new_rayjob():
    (job,) = by_kind("RayJob")
    check_rayjob(job)
    assert "name" not in job["metadata"] and job["metadata"]["generateName"].endswith("-")


def test_the_schedule_needs_no_third_party_image_and_names_each_run():
    (cron,) = by_kind("CronJob")
    (cluster,) = by_kind("RayCluster")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert container["command"] == ["python", "-m", "jobs.k8s_schedule"]
    template = yaml.safe_load(config_map("fastav-rayjob-template")["data"]["rayjob.yaml"])
    names = set()
    for slot in ("20261124-0200", "20261125-0200"):
        job = rayjob_for(template, slot)
        check_rayjob(job)
        names.add(job["metadata"]["name"])
        assert job["spec"]["entrypoint"].endswith(f"--run-id {slot}")
    assert len(names) == 2
    (role,) = by_kind("Role")
    assert set(role["rules"][0]["verbs"]) == {"get", "list", "create", "delete"}
    assert role["rules"][0]["resources"] == ["rayjobs"]
    assert pod["serviceAccountName"] == by_kind("ServiceAccount")[0]["metadata"]["name"]


def test_the_native_raycronjob_alternative():
    (native,) = by_kind("RayCronJob")
    assert validate(native) == [] and native["spec"]["jobTemplate"]["clusterSelector"] == {"ray.io/cluster": "fastav"}
    assert validate({**native, "spec": {**native["spec"], "schedule": "TZ=UTC 0 2 * * *"}})
