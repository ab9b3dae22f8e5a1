"""An app served by uvicorn on a thread of the test process: real sockets (so real client
disconnects), with the app's internals in reach of the test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import httpx
import uvicorn
from fastapi import FastAPI

from tests.support.net import eventually, free_port


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
        eventually(lambda: _answers_200(f"{self.url}{ready_path}"), timeout_s, f"{self.url}{ready_path}")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=60)


def _answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


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
