"""Schemathesis against the OpenAPI schema of the running main server: no 500s, and every response
(status, content type, headers, body) matches the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_api_conforms_to_its_schema(server, tmp_path):
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
        "run", f"{server.url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "30", "--workers", "1", "--seed", "1", "--request-timeout", "120",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "passed" in result.stdout
