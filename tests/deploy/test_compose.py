"""docker-compose.yml, validated and resolved by docker-compose itself, then checked against the code."""

from __future__ import annotations

import copy
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from app.settings import Settings
from tests.deploy.config import (
    INSID3_SERVICES,
    PROMETHEUS_CONFIG,
    VARIANTS,
    Mount,
    compose,
    host_path,
    mounts,
    parse_command,
    service,
    settings_from,
)
from tests.support.paths import REPO_ROOT
from workers.settings import WorkerSettings

SETTINGS = {"api": Settings, "worker": WorkerSettings}
OPTIONS = {"api": "serve", "worker": "worker"}


def settings_of(name: str, variant: str = "gpu"):
    """The settings the service's process builds from its environment and command line."""
    spec = service(name, variant)
    return settings_from(SETTINGS[name], spec["command"], spec["environment"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_has_a_restart_policy_and_resource_limits(variant):
    for name, spec in compose(variant)["services"].items():
        assert spec["restart"] in ("always", "unless-stopped"), name
        assert {"cpus", "memory"} <= set(spec["deploy"]["resources"]["limits"]), name


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", INSID3_SERVICES)
def test_commands_are_real_insid3_sub_commands(name, variant):
    assert parse_command(service(name, variant)["command"]).command == OPTIONS[name]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", INSID3_SERVICES)
def test_environment_holds_only_real_settings_with_valid_values(name, variant):
    assert service(name, variant)["environment"]
    settings_of(name, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_api_and_workers_share_the_redis_service(variant):
    urls = {settings_of(name, variant).redis_url for name in INSID3_SERVICES}
    assert len(urls) == 1
    [url] = urls
    assert urlsplit(url).hostname == "redis" and urlsplit(url).port == 6379
    assert service("redis")["image"].startswith("redis:7"), "the queue protocol needs Redis >= 7"


def test_dependencies_wait_for_health():
    for name, spec in compose()["services"].items():
        for dependency, condition in spec.get("depends_on", {}).items():
            assert dependency in compose()["services"], f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in service(dependency), f"{name} waits for {dependency}'s missing healthcheck"
    for name in INSID3_SERVICES:
        assert service(name)["depends_on"]["redis"]["condition"] == "service_healthy"


def test_workers_scale_and_reserve_a_gpu():
    worker = service("worker")
    assert "container_name" not in worker and "ports" not in worker, "--scale worker=N needs neither"
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert settings_of("worker").device == "auto", "auto: the reserved GPU"


def test_cpu_variant_reserves_no_gpu_and_runs_the_cpu_image():
    for name, spec in compose("cpu")["services"].items():
        assert "reservations" not in spec.get("deploy", {}).get("resources", {}), f"{name} reserves a device"
    for name in INSID3_SERVICES:
        spec = service(name, "cpu")
        assert spec["image"].endswith(":cpu") and spec["build"]["args"]["VARIANT"] == "cpu", name
    assert settings_of("worker", "cpu").device == "cpu"


def test_cpu_variant_is_the_gpu_stack_but_for_image_and_device():
    """Every other setting, command, mount, health check and limit is shared: nothing to keep in sync."""
    def without_variant(model: dict) -> dict:
        model = copy.deepcopy(model)
        for name in INSID3_SERVICES:
            spec = model["services"][name]
            spec.pop("image")
            spec["build"]["args"].pop("VARIANT")
            spec["environment"].pop("INSID3_DEVICE", None)
            spec["deploy"]["resources"].pop("reservations", None)
        return model

    assert without_variant(compose("cpu")) == without_variant(compose("gpu"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_image_can_come_from_a_private_registry(variant):
    mirror = "registry.example.com/mirror"
    images = {"REDIS_IMAGE": ("redis", f"{mirror}/redis:7.4-alpine"),
              "PROMETHEUS_IMAGE": ("prometheus", f"{mirror}/prometheus:v2.55.1"),
              "GRAFANA_IMAGE": ("grafana", f"{mirror}/grafana:11.3.1")}
    env = {variable: image for variable, (_, image) in images.items()}
    model = compose(variant, tuple({**env, "INSID3_IMAGE": f"{mirror}/insid3-serve",
                                    "BASE_IMAGE": f"{mirror}/python:3.11-slim-bookworm"}.items()))
    for name, image in images.values():
        assert model["services"][name]["image"] == image
    tag = "cpu" if variant == "cpu" else "cuda"
    for name in INSID3_SERVICES:
        assert model["services"][name]["image"] == f"{mirror}/insid3-serve:{tag}"
        assert model["services"][name]["build"]["args"]["BASE_IMAGE"] == f"{mirror}/python:3.11-slim-bookworm"
    assert {spec["image"] for spec in compose(variant)["services"].values()} & {image for _, image in images.values()} \
        == set(), "the defaults are the public images"


@pytest.mark.parametrize("variant", VARIANTS)
def test_build_args_are_the_dockerfiles(variant):
    declared = {word.split("=")[0] for line in (REPO_ROOT / "Dockerfile").read_text().splitlines()
                if line.startswith("ARG ") for word in line.split()[1:]}
    for name in INSID3_SERVICES:
        assert set(service(name, variant)["build"]["args"]) <= declared, name


def test_worker_healthcheck_probes_its_metrics_port():
    test = service("worker")["healthcheck"]["test"]
    assert test[:2] == ["CMD", "insid3-healthcheck"]
    assert urlsplit(test[2]).port == settings_of("worker").metrics_port


def test_api_publishes_its_port():
    settings = settings_of("api")
    assert [port["target"] for port in service("api")["ports"]] == [settings.port]


@pytest.mark.parametrize("variant", VARIANTS)
def test_bind_mounts_exist_in_the_repository(variant):
    for name in compose(variant)["services"]:
        for mount in mounts(name, variant):
            if mount.is_bind:
                source = Path(mount.source)
                assert source.is_relative_to(REPO_ROOT) and source.exists(), f"{name}: {source}"
            else:
                assert mount.source in compose(variant)["volumes"], f"{name}: undeclared volume {mount.source}"


def test_workers_read_weights_read_only_and_keep_the_basis_cache_on_a_volume():
    by_target = {mount.target: mount for mount in mounts("worker")}
    assert by_target["/app/pretrain"] == Mount(str(REPO_ROOT / "pretrain"), "/app/pretrain", read_only=True)
    assert not by_target["/var/cache/insid3"].is_bind, "the basis cache is a named volume"


def test_config_files_seen_by_the_containers_exist():
    [config] = [arg.split("=", 1)[1] for arg in service("prometheus")["command"] if arg.startswith("--config.file=")]
    assert host_path("prometheus", config) == PROMETHEUS_CONFIG
    assert host_path("redis", service("redis")["command"][1]) == REPO_ROOT / "deploy" / "redis" / "redis.conf"
    home = service("grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home).is_file()


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_prometheus():
    provisioning = REPO_ROOT / "deploy" / "grafana" / "provisioning"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "insid3.yml").read_text())["providers"]
    assert host_path("grafana", provider["options"]["path"]) == REPO_ROOT / "deploy" / "grafana" / "dashboards"
    assert host_path("grafana", "/etc/grafana/provisioning") == provisioning
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port == 9090


def test_prometheus_scrapes_the_api_and_every_worker():
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    [[api_target]] = [config["targets"] for config in jobs["insid3-api"]["static_configs"]]
    assert api_target == f"api:{settings_of('api').port}"
    [workers] = jobs["insid3-worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"] and workers["type"] == "A"
    assert workers["port"] == settings_of("worker").metrics_port
