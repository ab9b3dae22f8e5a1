"""Supervised loops: an error never ends a loop; unexpected errors in a row make the process
unhealthy, Redis errors do not (a restart would not cure them)."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

from workers.supervision import MAX_FAILURES, Health, supervise


def run_steps(errors: list[BaseException | None]) -> tuple[Health, int]:
    """Supervise a step that raises ``errors`` in turn (None: succeeds), then stops; returns the
    health and how many steps ran."""
    health, ran = Health(), 0

    async def main() -> None:
        stopping = asyncio.Event()

        async def step() -> None:
            nonlocal ran
            ran += 1
            error = errors[ran - 1]
            if ran == len(errors):
                stopping.set()
            if error is not None:
                raise error

        await asyncio.wait_for(supervise("loop", step, 0, health, stopping, logging.getLogger("test"),
                                         max_backoff_s=0.01), 10)

    asyncio.run(main())
    return health, ran


def test_a_loop_that_keeps_failing_makes_the_process_unhealthy_and_keeps_running() -> None:
    health, ran = run_steps([RuntimeError("boom")] * MAX_FAILURES)
    assert ran == MAX_FAILURES
    reason = health.reason()
    assert reason is not None and "loop failed 5 times in a row" in reason and "boom" in reason


def test_a_success_heals_and_redis_errors_never_make_the_process_unhealthy() -> None:
    health, _ = run_steps([RuntimeError("boom")] * (MAX_FAILURES - 1) + [None])
    assert health.reason() is None
    health, _ = run_steps([RedisConnectionError("down"), OutOfMemoryError("OOM")] * MAX_FAILURES)
    assert health.reason() is None
