"""deploy/k8s: rendered by kustomize (kubectl), validated against the Kubernetes schemas, then
checked against the code (commands, settings, the queue protocol KEDA scales on)."""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from tests.deploy.config import parse_command, run, settings_from
from workers.keys import GROUP, Keys
from workers.settings import WorkerSettings

KUBERNETES_VERSION = "1.30"  # the oldest release the manifests support
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}
SETTINGS = {"insid3-api": Settings, "insid3-worker": WorkerSettings}


@cache
def rendered() -> list[dict[str, Any]]:
    result = run("kubectl", "kustomize", "deploy/k8s")
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def resource(kind: str, name: str) -> dict[str, Any]:
    [found] = [doc for doc in rendered() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def container(deployment: str) -> dict[str, Any]:
    [only] = resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return only


def environment(deployment: str) -> dict[str, str]:
    """The container's environment: its ConfigMaps, then its own ``env``."""
    env: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        env.update(resource("ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({item["name"]: item["value"] for item in container(deployment).get("env", [])})
    return env


def settings_of(deployment: str):
    return settings_from(SETTINGS[deployment], container(deployment)["args"], environment(deployment))


def test_every_resource_validates_against_the_kubernetes_schemas():
    kinds = set()
    for doc in rendered():
        kinds.add(doc["kind"])
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert {"Deployment", "Service", "StatefulSet", "ScaledObject"} <= kinds


def test_the_validator_rejects_a_broken_manifest():
    deployment = resource("Deployment", "insid3-worker")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("deployment", "command"), [("insid3-api", "serve"), ("insid3-worker", "worker")])
def test_containers_run_insid3_sub_commands_with_real_settings(deployment, command):
    assert parse_command(container(deployment)["args"]).command == command
    settings_of(deployment)


def test_services_select_their_pods_and_ports():
    for service in (doc for doc in rendered() if doc["kind"] == "Service"):
        [workload] = [doc for doc in rendered() if doc["kind"] in ("Deployment", "StatefulSet")
                      and doc["spec"]["template"]["metadata"]["labels"].items() >= service["spec"]["selector"].items()]
        ports = {port["name"] for c in workload["spec"]["template"]["spec"]["containers"] for port in c["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports, service["metadata"]["name"]


def test_api_and_workers_reach_the_redis_service():
    for deployment in SETTINGS:
        url = urlsplit(settings_of(deployment).redis_url)
        [port] = resource("Service", url.hostname)["spec"]["ports"]
        assert port["port"] == url.port


def test_probes_and_scrape_annotations_use_the_real_ports():
    api, worker = settings_of("insid3-api"), settings_of("insid3-worker")
    for deployment, port in (("insid3-api", api.port), ("insid3-worker", worker.metrics_port)):
        annotations = resource("Deployment", deployment)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert [p["containerPort"] for p in container(deployment)["ports"]] == [port]
    assert container("insid3-api")["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container("insid3-api")["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_workers_get_a_gpu_and_read_only_weights():
    worker = container("insid3-worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    [weights] = [mount for mount in worker["volumeMounts"] if mount["mountPath"] == "/app/pretrain"]
    assert weights["readOnly"] is True


def test_keda_scales_the_workers_on_the_job_stream():
    scaled = resource("ScaledObject", "insid3-worker")["spec"]
    assert resource("Deployment", scaled["scaleTargetRef"]["name"])
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    thresholds = set()
    redis = urlsplit(settings_of("insid3-worker").redis_url)
    namespace = resource("Service", redis.hostname)["metadata"]["namespace"]
    for trigger in scaled["triggers"]:
        metadata = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        stream = Keys().for_model(settings_of("insid3-worker").model_key).stream  # the workers' model's stream
        assert metadata["stream"] == stream and metadata["consumerGroup"] == GROUP
        assert metadata["address"] == f"{redis.hostname}.{namespace}.svc.cluster.local:{redis.port}"
        thresholds |= {key for key in ("lagCount", "pendingEntriesCount") if int(metadata.get(key, 0)) > 0}
    assert thresholds == {"lagCount", "pendingEntriesCount"}
