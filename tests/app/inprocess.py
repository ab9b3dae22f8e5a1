"""An app served by uvicorn on a thread of the test process: real sockets (so real client
disconnects), with the app's internals in reach of the test."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import httpx
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port


class LiveServer:
    """``app`` under uvicorn on a free port, on a daemon thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/healthz", timeout_s: float = 180.0) -> LiveServer:
        """Start, then wait until ``ready_path`` answers 200."""
        self._thread.start()
        wait_until(lambda: _answers_200(f"{self.url}{ready_path}"), timeout_s)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=60)


def _answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds, else ``TimeoutError``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples named ``name`` (with these labels) on ``url``/metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and (labels or {}).items() <= sample.labels.items()
    )


class Gate:
    """Wraps a batch function: records the size of every batch run, and can hold the engine busy
    (``close()``: the next batch waits in the engine thread until ``open()``)."""

    def __init__(self, run_batch: Callable[[Sequence[object], object], Sequence[object]]) -> None:
        self._run_batch = run_batch
        self.batches: list[int] = []
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()

    def close(self) -> None:
        self.entered.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def __call__(self, requests: Sequence[object], references: object) -> Sequence[object]:
        self.entered.set()
        self._open.wait(timeout=300)
        self.batches.append(len(requests))
        return self._run_batch(requests, references)
