"""Free ports, waiting for a listener, and the one poll-until helper."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

STARTUP_S = 120.0  # a guard against hangs, never a performance assertion


def eventually(predicate: Callable[[], T], timeout_s: float = STARTUP_S, what: str = "the condition",
               interval_s: float = 0.05) -> T:
    """Call ``predicate`` until it returns something truthy and return that; ``TimeoutError``
    (naming ``what``) after ``timeout_s``. Exceptions of ``predicate`` propagate at once."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout_s:g} s")
        time.sleep(interval_s)
    return result


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    """Whether something accepts connections on ``port`` of localhost."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_port(port: int, timeout_s: float = STARTUP_S) -> None:
    """Block until something accepts connections on ``port`` (or fail the test)."""
    eventually(lambda: port_open(port), timeout_s, f"a listener on port {port}")
