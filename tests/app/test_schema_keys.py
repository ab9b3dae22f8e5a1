"""Schemathesis with API keys on (a key file with a tenant and an admin): no 500s and a
conforming schema, authenticated and not."""

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


@pytest.mark.parametrize("headers", [["-H", f"X-API-Key: {KEYS['alpha']}"], []], ids=["authenticated", "anonymous"])
def test_api_conforms_to_its_schema_with_keys_on(keyed_server, tmp_path, headers):
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
        "run", f"{keyed_server.url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "15", "--workers", "1", "--seed", "1", "--request-timeout", "120", *headers,
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "passed" in result.stdout
