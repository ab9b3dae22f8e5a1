"""Supervised background loops: restarted with backoff on any error, and a process health that
fails when a loop keeps failing (so compose/Kubernetes restart the process).

Redis being unreachable or refusing a command (out of memory, read-only replica) is not the
process's fault: such failures are retried with backoff but do not make the process unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import ResponseError

from workers.connection import REDIS_DOWN, Backoff

MAX_FAILURES = 5  # consecutive unexpected failures of one loop before the process is unhealthy


class Health:
    """The state of a process's supervised loops."""

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}
        self._errors: dict[str, str] = {}

    def ok(self, loop: str) -> None:
        self._failures[loop] = 0

    def failed(self, loop: str, error: BaseException) -> None:
        self._failures[loop] = self._failures.get(loop, 0) + 1
        self._errors[loop] = f"{type(error).__name__}: {error}"

    def reason(self) -> str | None:
        """None when healthy, else which loop keeps failing and its last error."""
        broken = [f"{loop} failed {n} times in a row ({self._errors[loop]})"
                  for loop, n in self._failures.items() if n >= MAX_FAILURES]
        return "; ".join(broken) or None


async def supervise(name: str, step: Callable[[], Awaitable[None]], period_s: float, health: Health,
                    stopping: asyncio.Event, log: logging.Logger, max_backoff_s: float = 5.0) -> None:
    """Run ``step`` every ``period_s`` until ``stopping``; an error is logged and retried with
    backoff (at most ``max_backoff_s``), never ends the loop."""
    backoff = Backoff(first_s=0.1, max_s=max_backoff_s)
    while not stopping.is_set():
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except (*REDIS_DOWN, ResponseError) as exc:
            delay = backoff.next_delay()
            log.warning("%s: Redis error (%s); retrying in %.1f s", name, exc, delay)
            health.ok(name)
            await _sleep(stopping, delay)
            continue
        except Exception as exc:
            health.failed(name, exc)
            delay = backoff.next_delay()
            log.exception("%s failed; restarting it in %.1f s", name, delay)
            await _sleep(stopping, delay)
            continue
        backoff.reset()
        health.ok(name)
        if period_s > 0:
            await _sleep(stopping, period_s)


async def _sleep(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep, waking up early when ``stopping`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
