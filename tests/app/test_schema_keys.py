"""Schemathesis with API keys on (a key file with tenants and an admin): no 500s and a conforming
schema, authenticated (the admin key: every route, /metrics included) and not. Anonymous requests
get 401 before any routing, so an unsupported method is a 401 there, not a 405 (nothing about
the routes is told to a caller without a key): that one check is left out of the anonymous run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.app.conftest import tiny_args
from tests.app.tenancy import KEYS, write_key_file
from tests.app.test_schema import CONFIG


@pytest.fixture(scope="module")
def keyed_server(start_server, tiny_checkpoint, tmp_path_factory):
    keys = write_key_file(tmp_path_factory.mktemp("keys") / "keys.txt")
    return start_server(tiny_args(tiny_checkpoint, image_size=64), {"INSID3_API_KEYS_FILE": str(keys)})


RUNS = {
    "authenticated": ["--exclude-checks", "positive_data_acceptance", "-H", f"X-API-Key: {KEYS['ops']}"],
    "anonymous": ["--exclude-checks", "positive_data_acceptance,unsupported_method"],
}


@pytest.mark.parametrize("options", RUNS.values(), ids=RUNS.keys())
def test_api_conforms_to_its_schema_with_keys_on(keyed_server, tmp_path, options):
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
        "run", f"{keyed_server.url}/openapi.json", "--checks", "all", *options,
        "--max-examples", "15", "--workers", "1", "--seed", "1", "--request-timeout", "120",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "passed" in result.stdout
