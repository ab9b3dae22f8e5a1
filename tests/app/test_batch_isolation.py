"""The batching loop keeps each job's failure its own and forgets abandoned jobs at once."""

from __future__ import annotations

import asyncio
import threading
import time

from app.backends.batcher import BatchingLoop


def far() -> float:
    return time.time() + 60


def test_a_batch_call_that_fails_is_retried_job_by_job():
    calls: list[list[str]] = []

    def crashes_with_poison(jobs, references):
        calls.append(list(jobs))
        if "poison" in jobs:
            raise RuntimeError("the whole call failed")
        return [f"done {job}" for job in jobs]

    async def scenario():
        loop = BatchingLoop(crashes_with_poison, max_batch=3, max_wait_s=5.0, max_queue=10, retry_after_s=1)
        loop.start()
        outcomes = await asyncio.gather(*(loop.submit([job], {}, far()) for job in ("a", "poison", "b")))
        await loop.close()
        return outcomes

    (a,), (poison,), (b,) = asyncio.run(scenario())
    assert (a, b) == ("done a", "done b") and isinstance(poison, RuntimeError)
    assert calls == [["a", "poison", "b"], ["a"], ["poison"], ["b"]]


def test_a_cancelled_submit_leaves_the_queue_at_once_and_never_runs():
    ran: list[str] = []
    started, release = threading.Event(), threading.Event()

    def held(jobs, references):
        started.set()
        release.wait(timeout=60)
        ran.extend(jobs)
        return [f"done {job}" for job in jobs]

    async def scenario():
        loop = BatchingLoop(held, max_batch=1, max_wait_s=0.0, max_queue=3, retry_after_s=1)
        loop.start()
        running = asyncio.create_task(loop.submit(["running"], {}, far()))
        await asyncio.to_thread(started.wait, 60)  # "running" is in the (held) batch, the queue empty
        abandoned = asyncio.create_task(loop.submit(["x", "y", "z"], {}, far()))
        await asyncio.sleep(0)
        full = loop.depth
        abandoned.cancel()
        await asyncio.gather(abandoned, return_exceptions=True)
        emptied = loop.depth
        kept = asyncio.create_task(loop.submit(["a", "b", "c"], {}, far()))  # fits again
        release.set()
        outcomes = await asyncio.gather(running, kept)
        await loop.close()
        return full, emptied, outcomes

    full, emptied, outcomes = asyncio.run(scenario())
    assert (full, emptied) == (3, 0)
    assert outcomes == [["done running"], ["done a", "done b", "done c"]]
    assert ran == ["running", "a", "b", "c"]
