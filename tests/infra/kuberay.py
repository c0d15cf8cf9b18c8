"""Validate KubeRay objects as KubeRay v1.7.0 would: its CRDs' OpenAPI schemas (unknown fields rejected, as the
API server does with strict field validation), plus the rules its operator enforces in code
(`../shared/kuberay-v1.7.0/README.md` summarises `controllers/ray/utils/validation.go`).

    errors = validate(document)      # [] when KubeRay would accept it
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[3] / "shared" / "kuberay-v1.7.0"
FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
GENERATED_SUFFIX = 5  # characters the API server appends to a generateName


def _strict(schema: object) -> object:
    """OpenAPI v3 (Kubernetes flavour) -> JSON Schema that rejects unknown fields."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items() if not key.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def schema(kind: str) -> dict:
    crd = yaml.safe_load((CRDS / FILES[kind]).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _ray_version(value: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", value or "")[:3])


def _name_errors(metadata: dict, limit: int) -> list[str]:
    name = metadata.get("name")
    generate = metadata.get("generateName")
    if not name and not generate:
        return ["metadata needs a name or a generateName"]
    full = name or generate + "x" * GENERATED_SUFFIX
    errors = []
    if not DNS_1035.match(full):
        errors.append(f"name {full!r} is not a DNS-1035 label")
    if len(full) > limit:
        errors.append(f"name {full!r} is longer than {limit} characters")
    return errors


def rayjob_rules(spec: dict) -> list[str]:
    errors = []
    selector = spec.get("clusterSelector")
    if bool(selector) == bool(spec.get("rayClusterSpec")):
        errors.append("exactly one of rayClusterSpec and clusterSelector must be set")
    if (spec.get("ttlSecondsAfterFinished") or 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
        errors.append("ttlSecondsAfterFinished > 0 requires shutdownAfterJobFinishes: true")
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if isinstance(spec.get(field), int) and spec[field] <= 0:  # a wrong type is the schema's finding
            errors.append(f"{field} must be > 0")
    if "runtimeEnvYAML" in spec:
        try:
            yaml.safe_load(spec["runtimeEnvYAML"])
        except yaml.YAMLError:
            errors.append("runtimeEnvYAML does not parse as YAML")
    if selector:
        if not selector.get("ray.io/cluster"):
            errors.append("clusterSelector needs a non-empty ray.io/cluster (the RayCluster's name)")
        if spec.get("backoffLimit"):
            errors.append("backoffLimit must be 0 or unset with clusterSelector (a retry would delete the cluster)")
        if spec.get("suspend"):
            errors.append("suspend is not allowed with clusterSelector")
        if spec.get("submissionMode") == "SidecarMode":
            errors.append("SidecarMode is not allowed with clusterSelector")
        if spec.get("shutdownAfterJobFinishes"):
            errors.append("shutdownAfterJobFinishes would shut down the shared cluster")
        strategy = spec.get("deletionStrategy") or {}
        policies = [strategy.get(k, {}).get("policy") for k in ("onSuccess", "onFailure")]
        policies += [rule.get("policy") for rule in strategy.get("deletionRules", [])]
        if {"DeleteCluster", "DeleteWorkers"} & set(policies):
            errors.append("a deletion strategy may not delete a shared cluster or its workers")
    strategy = spec.get("deletionStrategy")
    if strategy is not None:
        legacy, rules = "onSuccess" in strategy or "onFailure" in strategy, "deletionRules" in strategy
        if legacy and rules:
            errors.append("deletionStrategy: onSuccess/onFailure and deletionRules cannot be used together")
        if not rules and not ("onSuccess" in strategy and "onFailure" in strategy):
            errors.append("deletionStrategy needs both onSuccess and onFailure, or deletionRules")
    return errors


def raycluster_rules(spec: dict) -> list[str]:
    errors = []
    groups = [("head", spec.get("headGroupSpec", {}))] + [
        (g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs", [])
    ]
    for name, group in groups:
        if not group.get("template", {}).get("spec", {}).get("containers"):
            errors.append(f"group {name} has no container")
    if not spec.get("enableInTreeAutoscaling"):
        for group in spec.get("workerGroupSpecs", []):
            low, high = group.get("minReplicas"), group.get("maxReplicas")
            if low is None or high is None or low > high:
                errors.append(f"worker group {group.get('groupName')} needs minReplicas <= maxReplicas")
    if (spec.get("authOptions") or {}).get("mode") == "token" and _ray_version(spec.get("rayVersion")) < (2, 52, 0):
        errors.append("authOptions.mode token requires rayVersion >= 2.52.0")
    return errors


_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/\d+)?(,(\*|\d+(-\d+)?|[A-Za-z]{3})(/\d+)?)*$")


def cron_errors(schedule: str) -> list[str]:
    fields = schedule.split()
    if schedule.startswith(("TZ=", "CRON_TZ=")):
        return ["schedule must not carry a time zone (use spec.timeZone)"]
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        return [f"schedule {schedule!r} is not standard 5-field cron syntax"]
    return []


def validate(document: dict) -> list[str]:
    """Everything KubeRay v1.7.0 would refuse in this object (schema first, then the operator's rules)."""
    kind = document.get("kind")
    if kind not in FILES:
        return [f"not a KubeRay kind: {kind}"]
    validator = jsonschema.Draft202012Validator(schema(kind))
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)
    ]
    metadata, spec = document.get("metadata", {}), document.get("spec", {})
    if kind == "RayJob":
        errors += _name_errors(metadata, 47) + rayjob_rules(spec)
    elif kind == "RayCluster":
        errors += _name_errors(metadata, 63) + raycluster_rules(spec)
    else:
        errors += (
            _name_errors(metadata, 52)
            + cron_errors(spec.get("schedule", ""))
            + rayjob_rules(spec.get("jobTemplate", {}))
        )
    return errors
