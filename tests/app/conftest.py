"""Fixtures of the API tests: ``insid3 serve`` processes on free ports, and HTTP clients."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT, free_port, wait_for_port

IMAGE_SIZE = 128  # an 8x8 patch grid: coarse but enough to find a disc, and fast on a CPU


class Server:
    """``insid3 serve`` started as a subprocess with its own environment."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = workdir / f"serve-{self.port}.log"
        self.args = args
        self.env = {
            **os.environ,
            "INSID3_BASIS_CACHE_DIR": str(workdir / "basis"),
            "INSID3_PRETRAIN_DIR": str(workdir / "pretrain"),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "insid3", "serve", "--port", str(self.port), *self.args],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout_s=120)
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> Server:
        """Poll /readyz until 200 (the model loads in the background)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/readyz").status_code == 200:
                return self
            assert self.process is not None and self.process.poll() is None, self.log()
            time.sleep(0.1)
        raise TimeoutError(f"{self.url} not ready after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory: ``start_server(args, env, ready=True)``; every server is stopped at the end."""
    servers: list[Server] = []

    def start(args: list[str], env: dict[str, str] | None = None, ready: bool = True) -> Server:
        server = Server(tmp_path_factory.mktemp("serve"), args, env or {})
        servers.append(server.start())
        return server.wait_ready() if ready else server

    yield start
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.stop()


def tiny_args(checkpoint: Path, image_size: int = IMAGE_SIZE) -> list[str]:
    """``serve`` options for the tiny random checkpoint on the CPU."""
    return ["--model-size", "tiny", "--weights", str(checkpoint), "--image-size", str(image_size), "--device", "cpu"]


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the main server keeps references (shared with a server of another image size)."""
    return tmp_path_factory.mktemp("references")


@pytest.fixture(scope="session")
def server(start_server, tiny_checkpoint: Path, reference_dir: Path) -> Server:
    """The main server: tiny random checkpoint, 128 px, references on disk, 4 MP pixel limit."""
    return start_server(
        tiny_args(tiny_checkpoint),
        {"INSID3_REFERENCE_DIR": str(reference_dir), "INSID3_MAX_PIXELS": "4000000"},
    )


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client of the main server."""
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http
