"""KubeRay and Kubernetes manifests: core kinds against the Kubernetes schemas (kubernetes-validate, offline,
strict); RayCluster / RayJob against the fields KubeRay requires, their pod templates as Kubernetes Pods."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipeline.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]
K8S = "1.33"
MANIFESTS = sorted((ROOT / "infra/k8s").glob("*.yaml"))
DAYS = ("20261124", "20261125")


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
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m jobs.batch_infer --config /config/job.yaml")
    assert ("clusterSelector" in spec) != ("rayClusterSpec" in spec)
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode")
    if "clusterSelector" in spec:  # KubeRay does not shut down a cluster it did not create
        assert not spec.get("shutdownAfterJobFinishes")
        cluster = by_kind("RayCluster")[0]["metadata"]["name"]
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster}


def test_raycluster_has_what_kuberay_requires():
    (cluster,) = by_kind("RayCluster")
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    validate_pod_template(head["template"])
    assert spec["enableInTreeAutoscaling"] is True
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["groupName"] and isinstance(gpu["rayStartParams"], dict)
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    validate_pod_template(gpu["template"])
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["rayVersion"].startswith("2.60")
    mounts = {m["mountPath"] for m in head["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/config" in mounts  # the driver runs on the head and reads /config/job.yaml


def test_job_config_in_the_configmap_is_valid():
    config = PipelineConfig.model_validate(yaml.safe_load(config_map("fastav-job-config")["data"]["job.yaml"]))
    assert config.infer.num_gpus == 1 and config.source.uri.startswith("s3://")


def test_rayjob_manifest():
    (job,) = by_kind("RayJob")
    check_rayjob(job)


def test_schedule_creates_one_rayjob_per_run_id():
    (cron,) = by_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    template = cron["spec"]["jobTemplate"]["spec"]["template"]
    script = template["spec"]["containers"][0]["args"][0]
    assert "kubectl apply" in script and "RUN_ID=$(date -u +%Y%m%d)" in script
    text = config_map("fastav-rayjob-template")["data"]["rayjob.yaml"]
    for day in DAYS:
        job = yaml.safe_load(text.replace("__RUN_ID__", day))
        check_rayjob(job)
        assert job["metadata"]["name"] == f"fastav-batch-{day}"  # same day, same name: apply is a no-op
        assert f"--run-id {day}" in job["spec"]["entrypoint"]  # same run id: the job itself resumes
    (role,) = by_kind("Role")
    assert {"create", "get", "patch"} <= set(role["rules"][0]["verbs"])
    assert role["rules"][0]["resources"] == ["rayjobs"]
    assert template["spec"]["serviceAccountName"] == by_kind("ServiceAccount")[0]["metadata"]["name"]


def test_ray_token_auth_is_on_and_never_disabled():
    (cluster,) = by_kind("RayCluster")
    assert cluster["spec"]["authOptions"] == {"mode": "token"}
    major, minor, _ = (int(part) for part in cluster["spec"]["rayVersion"].split("."))
    assert (major, minor) >= (2, 52)  # KubeRay refuses token auth below Ray 2.52
    for path in MANIFESTS:
        assert "RAY_AUTH_MODE" not in path.read_text(), f"{path.name} sets the auth mode by hand"


def test_authoptions_is_a_field_of_kuberays_raycluster_schema():
    crd = yaml.safe_load((ROOT.parent / "shared/kuberay-v1.7.0/ray.io_rayclusters.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    auth = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["authOptions"]
    assert "token" in auth["properties"]["mode"]["enum"]
