"""Fixtures shared by every test area: free ports, a real redis-server, tiny random checkpoints."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("INSID3_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity"))


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    """Block until something accepts connections on ``port`` (or fail the test)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s} s")


class RedisServer:
    """A real ``redis-server`` on a free port, that tests may stop and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server started for the session on a free port."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``INSID3_TEST_REDIS_URL`` when given, else the session's own redis-server."""
    return os.environ.get("INSID3_TEST_REDIS_URL") or redis_server.url


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random DINOv3 checkpoint in the official layout, shrunk ViT-S/16 shapes (model size ``tiny``)."""
    from core.checkpoint import make_checkpoint

    path = tmp_path_factory.mktemp("weights") / "tiny_vits16.pth"
    make_checkpoint("tiny", path, seed=0)
    return path


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The golden data of the official implementation (../shared/parity)."""
    if not PARITY_DIR.is_dir():
        pytest.fail(f"parity fixtures not found at {PARITY_DIR} (set INSID3_PARITY_DIR)")
    return PARITY_DIR
