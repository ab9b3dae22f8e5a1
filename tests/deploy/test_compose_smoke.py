"""scripts/compose-smoke.sh and scripts/compose-standins.sh: checked statically always; the smoke test
itself (image build, stack up, end-to-end scenario, a worker killed mid-burst: minutes) only with
INSID3_DOCKER_TESTS=1 and a Docker engine. It passes the environment on, so the image overrides of
docs/deployment.md ("The smoke test") apply: e.g. for this machine's local stand-ins

    INSID3_DOCKER_TESTS=1 BASE_IMAGE=local/python:3.11-slim-bookworm REDIS_IMAGE=local/redis:7-bookworm \\
      PROMETHEUS_IMAGE=local/prometheus:bookworm TORCH_INDEX_URL=https://pypi.org/simple \\
      BUILD_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt python -m pytest tests/deploy/test_compose_smoke.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.deploy.config import VARIANTS, run
from tests.support.paths import REPO_ROOT

SCRIPTS = ("scripts/compose-smoke.sh", "scripts/compose-standins.sh")


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_pass_shellcheck_and_are_executable(script):
    result = run("shellcheck", script)
    assert result.returncode == 0, result.stdout
    assert os.access(REPO_ROOT / script, os.X_OK)


def test_smoke_runs_the_cpu_variant_and_mounts_its_client():
    text = (REPO_ROOT / "scripts" / "compose-smoke.sh").read_text()
    for path in VARIANTS["cpu"]:
        assert f"-f {path}" in text
    for path in re.findall(r"\$PWD/([\w/.-]+):", text):
        assert (REPO_ROOT / path).exists(), path


def test_smoke_client_knows_its_options():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "compose_smoke.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    options = set(re.findall(r"--[\w-]+", result.stdout))
    used = set(re.findall(r"(--[\w-]+) ", (REPO_ROOT / "scripts" / "compose-smoke.sh").read_text().split("client=(")[1]
                          .split("\n\"$DOCKER\" run")[0]))
    assert used <= options, used - options


@pytest.mark.skipif(os.environ.get("INSID3_DOCKER_TESTS") != "1", reason="INSID3_DOCKER_TESTS=1: minutes, needs Docker")
@pytest.mark.timeout(3600)
def test_compose_smoke():
    result = subprocess.run([str(REPO_ROOT / "scripts" / "compose-smoke.sh")], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=3600)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "SMOKE PASSED" in result.stdout
