"""Helpers of the worker-pool tests: real `insid3 worker` / `insid3 serve --redis-url` processes,
images, Prometheus scraping."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import redis
import redis.asyncio as aioredis
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO_ROOT
from workers.admin import Admin
from workers.consumer import Consumer
from workers.keys import DEFAULT_KEYS
from workers.producer import Producer

STARTUP_S = 120.0  # a guard against hangs, never a performance assertion
IMAGE_SIZE = 64


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = STARTUP_S) -> None:
    """Poll ``condition`` until true; fail (instead of hanging) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def random_image(seed: int, size: tuple[int, int] = (72, 88)) -> bytes:
    rng = np.random.default_rng(seed)
    return png((rng.random((*size, 3)) * 255).astype(np.uint8))


def box_mask(size: tuple[int, int] = (72, 88)) -> bytes:
    mask = np.zeros(size, np.uint8)
    mask[size[0] // 4:size[0] // 2, size[1] // 3:2 * size[1] // 3] = 255
    return png(mask)


def scrape(port: int) -> dict[str, float]:
    """Every sample of a Prometheus endpoint, keyed ``name{label="value",...}``."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


class Process:
    """A child ``insid3`` process with its log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "core.cli", *args], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                     "INSID3_BASIS_CACHE_DIR": str(log.parent / "basis"), **env},
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Signal the process and return its exit code."""
        if self.alive():
            self.popen.send_signal(signum)
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Launcher:
    """Starts workers and API processes on one Redis database; stops them all at the end."""

    def __init__(self, redis_url: str, checkpoint: Path, log_dir: Path) -> None:
        self.redis_url = redis_url
        self.checkpoint = checkpoint
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self.redis = redis.Redis.from_url(redis_url)

    def worker(self, name: str, metrics_port: int, *options: str, wait: bool = True, **env: str) -> Process:
        process = Process(
            ["worker", "--redis-url", self.redis_url, "--model-size", "tiny", "--weights", str(self.checkpoint),
             "--image-size", str(IMAGE_SIZE), "--device", "cpu", "--name", name,
             "--metrics-port", str(metrics_port), *options],
            self.log_dir / f"worker-{name}.log", env,
        )
        self.processes.append(process)
        if wait:
            self.wait_worker(name, process)
        return process

    def wait_worker(self, name: str, process: Process) -> None:
        wait_until(lambda: self._registered(name, process), f"worker {name} to register")

    def _registered(self, name: str, process: Process) -> bool:
        if not process.alive():
            raise RuntimeError(f"worker {name} exited:\n{process.output()}")
        return bool(self.redis.exists(f"insid3:worker:{name}"))

    def api(self, port: int, wait: bool = True, **env: str) -> Process:
        process = Process(
            ["serve", "--redis-url", self.redis_url, "--port", str(port), "--model-size", "tiny",
             "--image-size", str(IMAGE_SIZE)],
            self.log_dir / f"api-{port}.log", {"INSID3_LOG_LEVEL": "warning", **env},
        )
        self.processes.append(process)
        if wait:
            self.wait_api(port, process)
        return process

    def wait_api(self, port: int, process: Process) -> None:
        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"API on port {port} exited:\n{process.output()}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, f"the API on port {port} to be ready")

    def close(self) -> None:
        for process in self.processes:
            process.stop(timeout_s=20)
        self.redis.close()


class Queue(Producer, Consumer, Admin):
    """Every role of the protocol on one client, so that one test can play producer, worker and operator."""


async def served_queue(client: aioredis.Redis) -> Queue:
    """The protocol on the stream of the model the live workers serve (the tiny model at IMAGE_SIZE)."""
    models = await Producer(client).live_models()
    [model] = [key for key in models if key.endswith(f"@{IMAGE_SIZE}")]
    return Queue(client, DEFAULT_KEYS.for_model(model))
