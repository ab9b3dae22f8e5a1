"""The Dockerfile, .dockerignore and the scripts under docker/, checked without a Docker engine."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from app.settings import Settings
from tests.deploy.config import healthcheck, parse_command, run
from tests.support.net import free_port, wait_for_port
from tests.support.paths import REPO_ROOT
from tests.support.processes import Process
from workers.settings import WorkerSettings

ENV_OUTSIDE_SETTINGS = {"PYTHONUNBUFFERED"}
SETTINGS_ENV = {f"INSID3_{name.upper()}" for name in {*Settings.model_fields, *WorkerSettings.model_fields}}


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(REPO_ROOT / "Dockerfile"))


def instructions(dockerfile: DockerfileParser, name: str) -> list[str]:
    return [item["value"] for item in dockerfile.structure if item["instruction"] == name]


def dockerignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context (last matching pattern wins)."""
    ignored = False
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = re.escape(pattern.lstrip("!").rstrip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            ignored = not negated
    return ignored


def test_hadolint_passes():
    result = run("hadolint", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def build_args(dockerfile: DockerfileParser) -> dict[str, str]:
    """Every ARG with its default where it is first declared ('' for none)."""
    args: dict[str, str] = {}
    for value in instructions(dockerfile, "ARG"):
        for word in value.split():
            name, _, default = word.partition("=")
            args.setdefault(name, default)
    return args


def pip_runs(dockerfile: DockerfileParser) -> list[str]:
    return [value for value in instructions(dockerfile, "RUN") if re.search(r"\bpip (install|wheel)\b", value)]


def test_multi_stage_with_cuda_default_and_cpu_variant(dockerfile):
    """A wheel-building stage, then one slim Python base for both variants: one torch, nothing twice."""
    stages = [value.split() for value in instructions(dockerfile, "FROM")]
    assert stages == [["${BASE_IMAGE}", "AS", "build"], ["${BASE_IMAGE}"]]
    args = build_args(dockerfile)
    assert args["VARIANT"] == "cuda"
    assert args["BASE_IMAGE"].startswith("python:3.11-slim")
    assert "download.pytorch.org/whl/cpu" in dockerfile.content
    torch_installs = [run for run in pip_runs(dockerfile) if "torch==" in run]
    assert len(torch_installs) == 1, "torch is installed once, in one layer"
    assert not re.search(r"pytorch/pytorch|nvidia/cuda", dockerfile.content), "the torch wheels bring CUDA"


def test_builds_offline_or_behind_a_proxy(dockerfile):
    """No frontend to pull; base image and indexes are build args; every pip run can get a CA bundle and
    a pip.conf as BuildKit secrets (never in a layer nor in the history)."""
    assert not dockerfile.content.startswith("# syntax="), "a `# syntax=` line makes BuildKit pull the frontend"
    assert {"BASE_IMAGE", "TORCH_INDEX_URL", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"} \
        <= set(build_args(dockerfile))
    runs = pip_runs(dockerfile)
    assert len(runs) == 3
    for step in runs:
        assert "--mount=type=secret,id=pip.conf,target=/etc/pip.conf" in step, step
        assert "--mount=type=secret,id=ca.crt,target=/run/secrets/ca.crt" in step, step
        assert "export PIP_CERT=/run/secrets/ca.crt" in step, step
        assert "--no-cache-dir" in step, step
    assert all("ca.crt" not in value and "pip.conf" not in value for value in instructions(dockerfile, "COPY"))


def test_torch_pins_match_pyproject(dockerfile):
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = {dep.split("==")[0]: dep for dep in project["dependencies"] if dep.startswith(("torch==", "torchvision=="))}
    assert set(pins) == {"torch", "torchvision"}
    for pin in pins.values():
        assert re.search(rf"\s{re.escape(pin)}(\s|$)", dockerfile.content), f"the image does not install {pin}"


def test_copied_sources_exist_and_reach_the_build_context(dockerfile):
    sources = [source for value in instructions(dockerfile, "COPY") if "--from=" not in value
               for source in value.split()[:-1] if not source.startswith("--")]
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {include.rstrip("*") for include in packages["include"]} <= set(sources), "a package is not copied"
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such file"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"


def test_build_stage_makes_a_complete_wheel(dockerfile, tmp_path):
    """What the build stage copies is enough for a wheel with every package and the web page."""
    stage, context = None, tmp_path / "src"
    for item in dockerfile.structure:
        if item["instruction"] == "FROM":
            stage = item["value"].split()[-1]
        elif stage == "build" and item["instruction"] == "COPY":
            *sources, destination = item["value"].split()
            for source in sources:
                target = context / (source if destination.endswith("/") else destination)
                target.parent.mkdir(parents=True, exist_ok=True)
                copy = shutil.copytree if (REPO_ROOT / source).is_dir() else shutil.copy
                copy(REPO_ROOT / source, target)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "--wheel-dir", str(tmp_path / "wheels"), str(context)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    [wheel] = (tmp_path / "wheels").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for path in ("app/main.py", "app/static/index.html", "core/engine.py", "workers/worker.py",
                 "evaluation/runner.py"):
        assert path in names, f"{path} is missing from the image's wheel"


def test_weights_and_local_state_stay_out_of_the_build_context():
    for path in ("pretrain/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth", ".venv/bin/python", ".git/HEAD",
                 "app/__pycache__/main.cpython-311.pyc", "tests/conftest.py"):
        assert dockerignored(path), path


def test_runs_as_a_non_root_user_it_creates(dockerfile):
    [user] = instructions(dockerfile, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root uid (Kubernetes runAsNonRoot can check it)"
    assert f"--uid {uid}" in dockerfile.content


def test_environment_holds_only_real_settings(dockerfile):
    names = set(dockerfile.envs) - set(dockerfile.parent_env)
    assert names, "the Dockerfile sets no environment"
    assert names - ENV_OUTSIDE_SETTINGS <= SETTINGS_ENV, names - ENV_OUTSIDE_SETTINGS - SETTINGS_ENV


def test_default_command_is_an_insid3_sub_command(dockerfile):
    assert parse_command(["serve"]).command == "serve"
    assert dockerfile.cmd.strip() == '["serve"]'
    assert "insid3-entrypoint" in instructions(dockerfile, "ENTRYPOINT")[0]


def test_healthcheck_runs_the_healthz_probe(dockerfile):
    [healthcheck] = instructions(dockerfile, "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["insid3-healthcheck"]')
    assert "COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/insid3-healthcheck" in dockerfile.content


def test_volume_holds_the_basis_cache(dockerfile):
    [volume] = instructions(dockerfile, "VOLUME")
    [mount] = re.findall(r'"([^"]+)"', volume)
    assert Path(dockerfile.envs["INSID3_BASIS_CACHE_DIR"]).is_relative_to(mount)
    assert dockerfile.envs["INSID3_PRETRAIN_DIR"] == "/app/pretrain"


def test_entrypoint_script_passes_shellcheck():
    result = run("shellcheck", "docker/entrypoint.sh")
    assert result.returncode == 0, result.stdout


def entrypoint(tmp_path: Path, *args: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INSID3_BASIS_CACHE_DIR": str(cache_dir),
           "PATH": f"{sysconfig.get_path('scripts')}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(REPO_ROOT / "docker" / "entrypoint.sh"), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def test_entrypoint_runs_insid3(tmp_path):
    result = entrypoint(tmp_path, "worker", "--help", cache_dir=tmp_path / "cache" / "basis")
    assert result.returncode == 0, result.stderr
    assert "--metrics-port" in result.stdout
    assert (tmp_path / "cache" / "basis").is_dir()


def test_entrypoint_refuses_an_unwritable_cache(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    result = entrypoint(tmp_path, "serve", "--help", cache_dir=tmp_path / "file" / "basis")
    assert result.returncode == 1
    assert "is not writable" in result.stderr


@pytest.fixture
def http_server(tmp_path):
    """``python -m http.server`` serving a file named ``healthz``: 200 on /healthz, 404 elsewhere."""
    (tmp_path / "healthz").write_text("ok")
    port = free_port()
    server = Process([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                     tmp_path / "http-server.log", cwd=tmp_path)
    wait_for_port(port)
    yield port
    server.stop(timeout_s=10)


def test_healthcheck_script(http_server):
    assert healthcheck(port=http_server) == 0
    assert healthcheck(f"http://127.0.0.1:{http_server}/missing", port=http_server) == 1
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        assert healthcheck(port=closed.getsockname()[1]) == 1
