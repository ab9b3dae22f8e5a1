"""A real ``redis-server`` on a free port, that tests may stop and restart."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.net import free_port, wait_for_port
from tests.support.processes import Process


class RedisServer:
    """``redis-server`` without persistence, its working directory and log in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = Process([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(self.workdir)],
                               self.workdir / "redis-server.log")
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout_s=10)
            self.process = None
