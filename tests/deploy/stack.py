"""The compose stack without Docker: the same programs with the same commands and environment
(docker-compose.yml, deploy/redis, deploy/prometheus), on free localhost ports."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.deploy.config import PROMETHEUS_CONFIG, service, tool
from tests.support.net import eventually, free_port, wait_for_port
from tests.support.paths import REPO_ROOT
from tests.support.processes import Processes, wait_ready


def with_options(argv: list[str], **options: object) -> list[str]:
    """``argv`` with each ``--option value`` replaced, or appended when absent."""
    argv = list(argv)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = str(value)
        else:
            argv += [flag, str(value)]
    return argv


def local_prometheus_config(targets: dict[str, list[str]], rule_dir: Path = PROMETHEUS_CONFIG.parent) -> dict:
    """deploy/prometheus/prometheus.yml with every job's targets replaced by ``targets[job]``."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rule_dir / name) for name in config["rule_files"]]
    jobs = config["scrape_configs"]
    assert {job["job_name"] for job in jobs} == set(targets), "a scrape job without a local process"
    for job in jobs:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return config


class Stack(Processes):
    """Redis, the API, N workers and Prometheus as child processes of the test."""

    def __init__(self, workdir: Path, checkpoint: Path, image_size: int) -> None:
        super().__init__(workdir)
        self.workdir = workdir
        self.checkpoint = checkpoint
        self.image_size = image_size
        self.redis_url = ""
        self.api_port = 0
        self.worker_ports: list[int] = []
        self.prometheus_port = 0

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def start_redis(self) -> None:
        port = free_port()
        data = self.workdir / "redis"
        data.mkdir()
        self.start("redis", [tool("redis-server"), str(REPO_ROOT / "deploy" / "redis" / "redis.conf"),
                             "--port", str(port), "--bind", "127.0.0.1"], cwd=data)
        wait_for_port(port)
        self.redis_url = f"redis://127.0.0.1:{port}/0"

    def _insid3(self, name: str, compose_service: str, argv: list[str]) -> None:
        self.insid3(name, argv, {**service(compose_service)["environment"], "INSID3_LOG_LEVEL": "warning"})

    def start_api(self) -> None:
        self.api_port = free_port()
        argv = with_options(service("api")["command"], redis_url=self.redis_url, host="127.0.0.1", port=self.api_port)
        self._insid3("api", "api", argv)

    def start_worker(self, index: int) -> None:
        port = free_port()
        argv = with_options(
            service("worker")["command"], redis_url=self.redis_url, metrics_port=port, name=f"deploy-test-{index}",
            model_size="tiny", weights=self.checkpoint, image_size=self.image_size, device="cpu",
        )
        self._insid3(f"worker-{index}", "worker", argv)
        self.worker_ports.append(port)

    def start_prometheus(self) -> None:
        self.prometheus_port = free_port()
        config = local_prometheus_config({
            "insid3-api": [f"127.0.0.1:{self.api_port}"],
            "insid3-worker": [f"127.0.0.1:{port}" for port in self.worker_ports],
        })
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.start("prometheus", [
            tool("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}", "--log.level=warn",
        ])

    def wait_ready(self) -> None:
        """Until the API is ready (a worker is alive) and every process answers on its port."""
        wait_ready(self.api_url, self)
        for port in [*self.worker_ports, self.prometheus_port]:
            wait_for_port(port)

    def wait_scraped(self, targets: int) -> None:
        """Until Prometheus has scraped ``targets`` targets successfully."""
        def scraped() -> bool:
            self.check_alive()
            active = self.prometheus_api("targets")["activeTargets"]
            return len(active) == targets and all(target["health"] == "up" for target in active)

        eventually(scraped, what=f"Prometheus to scrape {targets} targets", interval_s=0.2)

    def wait_next_scrape(self) -> None:
        """Until Prometheus has scraped every target again."""
        since = time.time()
        eventually(lambda: float(self.query("min(timestamp(up))")[0]["value"][1]) > since, what="the next scrape",
                   interval_s=0.2)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query; AssertionError when Prometheus rejects it."""
        response = httpx.get(f"http://127.0.0.1:{self.prometheus_port}/api/v1/query", params={"query": expr},
                             timeout=30)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]["result"]

    def prometheus_api(self, path: str) -> Any:
        response = httpx.get(f"http://127.0.0.1:{self.prometheus_port}/api/v1/{path}", timeout=30)
        response.raise_for_status()
        return response.json()["data"]
