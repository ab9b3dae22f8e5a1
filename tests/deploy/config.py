"""The deployment files as data: the resolved compose model, dashboards, alert rules; the tools.

Paths into the container (``/etc/prometheus/...``) are mapped back to repository files through the
service's bind mounts, so every test reads exactly what the containers would see.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from core.settings import EngineSettings
from insid3.cli import build_parser
from tests.support.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
INSID3_SERVICES = ("api", "worker")


# pip-installed binaries, then the system's; Compose v2 (Debian 13) may live only among Docker's plugins.
TOOL_PATH = os.pathsep.join(
    [sysconfig.get_path("scripts"), os.environ.get("PATH", ""), "/usr/libexec/docker/cli-plugins"]
)


def tool(name: str) -> str:
    """A command-line tool from the virtual environment, the system, or Docker's CLI plugins."""
    path = shutil.which(name, path=TOOL_PATH)
    if path is None:
        raise RuntimeError(f"{name} is not installed (docs/deployment.md, 'What the test suite checks')")
    return path


def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool and capture its output as text (the caller checks the exit code)."""
    return subprocess.run([tool(args[0]), *args[1:]], capture_output=True, text=True, cwd=REPO_ROOT, **kwargs)


def healthcheck(*args: str, port: int) -> int:
    """Exit code of the image's health check script (docker/healthcheck.py) with INSID3_PORT=port."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "docker" / "healthcheck.py"), *args],
                          env={"INSID3_PORT": str(port)}, capture_output=True, timeout=30).returncode


# The compose variants: a plain `docker compose up` reads docker-compose.override.yml (the GPU
# reservation) by itself; the CPU variant names its files, which leaves the override out.
VARIANTS = {
    "gpu": ("docker-compose.yml", "docker-compose.override.yml"),
    "cpu": ("docker-compose.yml", "docker-compose.cpu.yml"),
}


@cache
def compose(variant: str = "gpu", env: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """``docker-compose config`` of a variant: the validated, interpolated model with the defaults
    (no .env), or with the variables ``env``."""
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:
        env_file.write("".join(f"{key}={value}\n" for key, value in env))
        env_file.flush()
        files = [arg for path in VARIANTS[variant] for arg in ("-f", path)]
        result = run("docker-compose", "--env-file", env_file.name, *files, "config",
                     env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def service(name: str, variant: str = "gpu") -> dict[str, Any]:
    return compose(variant)["services"][name]


@dataclass(frozen=True)
class Mount:
    source: str  # an absolute host path (bind mount) or a volume name
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


def mounts(service_name: str, variant: str = "gpu") -> list[Mount]:
    """The service's volumes, from the short syntax (docker-compose 1.x) or the long one (2.x)."""
    found = []
    for volume in service(service_name, variant).get("volumes", []):
        if isinstance(volume, str):
            source, target, mode = [*volume.split(":"), "rw"][:3]
            found.append(Mount(source, target, mode == "ro"))
        else:
            found.append(Mount(volume["source"], volume["target"], bool(volume.get("read_only"))))
    return found


def host_path(service_name: str, container_path: str) -> Path:
    """The repository file a service sees at ``container_path`` (through its bind mounts)."""
    target = PurePosixPath(container_path)
    for mount in mounts(service_name):
        if mount.is_bind and target.is_relative_to(mount.target):
            return Path(mount.source) / target.relative_to(mount.target)
    raise AssertionError(f"{service_name} has no bind mount holding {container_path}")


def parse_command(argv: list[str]) -> Any:
    """``insid3 ARGV`` parsed by the real command-line parser (SystemExit on a bad command)."""
    return build_parser().parse_args(argv)


def settings_from(model: type[EngineSettings], argv: list[str], env: dict[str, str]) -> Any:
    """The settings ``insid3 ARGV`` builds in environment ``env`` (options win), validated.

    AssertionError for a variable that is not one of the model's settings."""
    fields = {}
    for key, value in env.items():
        name = key.removeprefix("INSID3_").lower()
        assert key.startswith("INSID3_") and name in model.model_fields, f"{key} is not a setting"
        fields[name] = value
    options = {key: value for key, value in vars(parse_command(argv)).items()
               if key in model.model_fields and value is not None}
    return model(**{**fields, **options})


@cache
def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that show data (rows left out)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(``dashboard / panel``, PromQL) of every dashboard query."""
    return [
        (f"{name} / {panel['title']}", target["expr"])
        for name, dashboard in dashboards().items()
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]


@cache
def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def alert_queries() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in alert_rules()]
