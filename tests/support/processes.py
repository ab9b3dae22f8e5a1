"""The one launcher of child processes (``insid3 serve``, ``insid3 worker``, redis-server, Prometheus, ...):
output captured to a log file, and a teardown that always ends them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.net import STARTUP_S, eventually
from tests.support.paths import REPO_ROOT

INSID3 = (sys.executable, "-m", "insid3")


class Process:
    """A child process writing stdout and stderr to ``log``."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> None:
        self.argv = [str(arg) for arg in argv]
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(self.argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                          env={**os.environ, **(env or {})})

    @classmethod
    def insid3(cls, args: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
        """``insid3 ARGS`` (through ``python -m insid3``), one thread; its basis cache is the session's
        (``INSID3_BASIS_CACHE_DIR``, set by the ``warm_basis_cache`` fixture), else one beside the log."""
        basis = os.environ.get("INSID3_BASIS_CACHE_DIR", str(log.parent / "basis"))
        env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "INSID3_BASIS_CACHE_DIR": basis, **(env or {})}
        return cls([*INSID3, *args], log, env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        """``RuntimeError`` with the log when the process has exited."""
        if not self.alive():
            raise RuntimeError(f"{' '.join(self.argv)} exited with {self.popen.returncode}:\n{self.output()}")

    def send(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Signal the process (unless it has exited), wait, kill it if it will not end; its exit code."""
        if self.alive():
            self.popen.send_signal(signum)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 60.0) -> int:
        """Wait for the process to end, killing it after ``timeout_s``; its exit code."""
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Processes:
    """Child processes logging into one folder, all stopped (newest first) by ``close``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Process] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> Process:
        return self._add(Process(argv, self.log_dir / f"{name}.log", env, cwd))

    def insid3(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        return self._add(Process.insid3(args, self.log_dir / f"{name}.log", env))

    def _add(self, process: Process) -> Process:
        self.started.append(process)
        return process

    def check_alive(self) -> None:
        for process in self.started:
            process.check_alive()

    def close(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to every process at once (newest first), then wait for each to end."""
        for process in reversed(self.started):
            if process.alive():
                process.send(signal.SIGTERM)
        for process in reversed(self.started):
            process.wait(timeout_s)


def is_ready(url: str) -> bool:
    """``GET url/readyz`` answers 200 (False while nothing listens yet)."""
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def wait_ready(url: str, *processes: Process | Processes, timeout_s: float = STARTUP_S) -> None:
    """Until the API at ``url`` is ready; fails at once with the log if one of ``processes`` exits."""
    def ready() -> bool:
        for process in processes:
            process.check_alive()
        return is_ready(url)

    eventually(ready, timeout_s, f"{url} to be ready")
