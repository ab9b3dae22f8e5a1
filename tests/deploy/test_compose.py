"""docker-compose.yml, validated and resolved by docker-compose itself, then checked against the code."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from app.settings import Settings
from tests.deploy.config import (
    INSID3_SERVICES,
    PROMETHEUS_CONFIG,
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


def settings_of(name: str):
    """The settings the service's process builds from its environment and command line."""
    return settings_from(SETTINGS[name], service(name)["command"], service(name)["environment"])


def test_every_service_has_a_restart_policy_and_resource_limits():
    for name, spec in compose()["services"].items():
        assert spec["restart"] in ("always", "unless-stopped"), name
        assert {"cpus", "memory"} <= set(spec["deploy"]["resources"]["limits"]), name


@pytest.mark.parametrize("name", INSID3_SERVICES)
def test_commands_are_real_insid3_sub_commands(name):
    assert parse_command(service(name)["command"]).command == OPTIONS[name]


@pytest.mark.parametrize("name", INSID3_SERVICES)
def test_environment_holds_only_real_settings_with_valid_values(name):
    assert service(name)["environment"]
    settings_of(name)


def test_api_and_workers_share_the_redis_service():
    urls = {settings_of(name).redis_url for name in INSID3_SERVICES}
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


def test_worker_healthcheck_probes_its_metrics_port():
    test = service("worker")["healthcheck"]["test"]
    assert test[:2] == ["CMD", "insid3-healthcheck"]
    assert urlsplit(test[2]).port == settings_of("worker").metrics_port


def test_api_publishes_its_port():
    settings = settings_of("api")
    assert [port["target"] for port in service("api")["ports"]] == [settings.port]


def test_bind_mounts_exist_in_the_repository():
    for name in compose()["services"]:
        for mount in mounts(name):
            if mount.is_bind:
                source = Path(mount.source)
                assert source.is_relative_to(REPO_ROOT) and source.exists(), f"{name}: {source}"
            else:
                assert mount.source in compose()["volumes"], f"{name}: undeclared volume {mount.source}"


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
