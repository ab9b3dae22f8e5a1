"""The launcher of the worker-pool tests: real `insid3 worker` / `insid3 serve --redis-url` processes
on one Redis database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis.asyncio import Redis

from insid3.cli import main as insid3
from tests.support.net import eventually
from tests.support.processes import Process, Processes, wait_ready
from workers.admin import Admin
from workers.client import QueueLimits, RedisBackend
from workers.connection import connect
from workers.consumer import Consumer
from workers.keys import DEFAULT_KEYS, Keys
from workers.producer import Producer

IMAGE_SIZE = 64
T = TypeVar("T")


def run_with_redis(redis_url: str, scenario: Callable[[Redis, Keys], Awaitable[T]]) -> T:
    """Run ``scenario`` with a client of ``redis_url`` and queue keys of a prefix no other test uses."""

    async def main() -> T:
        client = connect(redis_url)
        try:
            return await scenario(client, Keys(prefix=f"test-{uuid.uuid4().hex[:12]}"))
        finally:
            await client.aclose()

    return asyncio.run(main())


def run_with_backend(redis_url: str, scenario: Callable[[RedisBackend], Awaitable[T]], max_backlog: int = 64,
                     retry_after_s: int = 1) -> T:
    """Run ``scenario`` on a started ``RedisBackend`` (the API's side of the queue) of ``redis_url``."""

    async def main() -> T:
        backend = RedisBackend(redis_url, QueueLimits(max_backlog, retry_after_s, 86_400.0, 60.0))
        await backend.start()
        try:
            return await scenario(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


class Launcher(Processes):
    """Starts workers and API processes on one Redis database; ``close`` stops them all."""

    def __init__(self, redis_url: str, checkpoint: Path, log_dir: Path) -> None:
        super().__init__(log_dir)
        self.redis_url = redis_url
        self.checkpoint = checkpoint
        self.redis = redis.Redis.from_url(redis_url)

    def worker(self, name: str, metrics_port: int, *options: str, wait: bool = True, **env: str) -> Process:
        process = self.insid3(f"worker-{name}", [
            "worker", "--redis-url", self.redis_url, "--model-size", "tiny", "--weights", str(self.checkpoint),
            "--image-size", str(IMAGE_SIZE), "--device", "cpu", "--name", name,
            "--metrics-port", str(metrics_port), *options], env)
        if wait:
            self.wait_worker(name, process)
        return process

    def wait_worker(self, name: str, process: Process) -> None:
        def registered() -> bool:
            process.check_alive()
            return bool(self.redis.exists(f"insid3:worker:{name}"))

        eventually(registered, what=f"worker {name} to register")

    def api(self, port: int, wait: bool = True, **env: str) -> Process:
        process = self.insid3(f"api-{port}", [
            "serve", "--redis-url", self.redis_url, "--port", str(port), "--model-size", "tiny",
            "--image-size", str(IMAGE_SIZE)], {"INSID3_LOG_LEVEL": "warning", **env})
        if wait:
            self.wait_api(port, process)
        return process

    def wait_api(self, port: int, process: Process) -> None:
        wait_ready(f"http://127.0.0.1:{port}", process)

    def close(self, timeout_s: float = 20.0) -> None:
        super().close(timeout_s)
        self.redis.close()


class Queue(Producer, Consumer, Admin):
    """Every role of the protocol on one client, so that one test can play producer, worker and operator."""


async def served_queue(client: Redis) -> Queue:
    """The protocol on the stream of the model the live workers serve (the tiny model at IMAGE_SIZE)."""
    models = await Producer(client).live_models()
    [model] = [key for key in models if key.endswith(f"@{IMAGE_SIZE}")]
    return Queue(client, DEFAULT_KEYS.for_model(model))


def queue_cli(launcher: Launcher, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The output of ``insid3 queue --redis-url URL ARGS`` (``insid3.cli.main`` in-process), which must succeed."""
    capsys.readouterr()
    assert insid3(["queue", "--redis-url", launcher.redis_url, *args]) == 0
    return capsys.readouterr().out
