"""The embedded batching loop, driven by a recording batch function on a real event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.backends.batcher import BatchingLoop
from core.errors import InvalidImageError
from core.serving import DeadlineExceeded, ModelUnavailable, QueueFull


class Recorder:
    """A batch function that records its batches and can be held busy."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, jobs, references):
        self.started.set()
        self.release.wait()
        self.batches.append(list(jobs))
        return [InvalidImageError(f"bad {job}") if job.startswith("bad") else f"done {job}" for job in jobs]


def far() -> float:
    return time.time() + 60


def run(coroutine):
    return asyncio.run(coroutine)


def started(run_batch, **options) -> BatchingLoop:
    """A started loop (on the running event loop) of ``run_batch``; ``options`` over small defaults."""
    loop = BatchingLoop(run_batch, **{"max_batch": 4, "max_wait_s": 0.0, "max_queue": 10, "retry_after_s": 1,
                                      **options})
    loop.start()
    return loop


async def held_busy(**options) -> tuple[Recorder, BatchingLoop, asyncio.Task]:
    """A loop of one job per batch whose engine is held busy running the job "running"."""
    recorder = Recorder()
    recorder.release.clear()
    loop = started(recorder, max_batch=1, **options)
    busy = asyncio.create_task(loop.submit(["running"], {}, far()))
    await asyncio.to_thread(recorder.started.wait)  # the worker holds "running"; the queue is empty
    return recorder, loop, busy


def test_concurrent_jobs_share_batches_up_to_max_batch():
    async def scenario():
        recorder = Recorder()
        loop = started(recorder, max_batch=3, max_wait_s=5.0)
        tasks = [asyncio.create_task(loop.submit(jobs, {}, far())) for jobs in ([f"job{i}"] for i in range(3))]
        tasks.append(asyncio.create_task(loop.submit(["job3", "job4"], {}, far())))
        async with asyncio.timeout(60):  # the first full batch is taken; the rest waits for its batch to fill
            while loop.depth != 2 or len(recorder.batches) != 1:
                await asyncio.sleep(0.001)
        await loop.close()  # closing runs the partial batch without waiting out max_wait
        return recorder.batches, await asyncio.gather(*tasks)

    batches, results = run(scenario())
    assert batches == [["job0", "job1", "job2"], ["job3", "job4"]]
    assert results == [["done job0"], ["done job1"], ["done job2"], ["done job3", "done job4"]]


def test_a_lone_job_waits_at_most_max_wait():
    async def scenario():
        loop = started(Recorder(), max_batch=8, max_wait_s=0.01)
        result = await loop.submit(["alone"], {}, far())
        await loop.close()
        return result

    assert run(scenario()) == ["done alone"]


def test_errors_stay_in_their_slot():
    async def scenario():
        loop = started(Recorder())
        result = await loop.submit(["ok", "bad"], {}, far())
        await loop.close()
        return result

    ok, bad = run(scenario())
    assert ok == "done ok" and isinstance(bad, InvalidImageError)


def test_queue_full_is_all_or_nothing():
    async def scenario():
        recorder, loop, busy = await held_busy(max_queue=2, retry_after_s=7)
        queued = asyncio.create_task(loop.submit(["a", "b"], {}, far()))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as refused:
            await loop.submit(["c"], {}, far())
        assert loop.depth == 2
        recorder.release.set()
        results = await asyncio.gather(busy, queued)
        await loop.close()
        return refused.value, results, recorder.batches

    refused, results, batches = run(scenario())
    assert refused.retry_after_s == 7 and "2 of 2" in refused.detail
    assert results == [["done running"], ["done a", "done b"]]
    assert ["c"] not in batches


def test_a_job_past_its_deadline_is_dropped_unrun():
    async def scenario():
        recorder, loop, busy = await held_busy()
        with pytest.raises(DeadlineExceeded):
            await loop.submit(["late"], {}, time.time() + 0.05)
        recorder.release.set()
        await busy
        after = await loop.submit(["next"], {}, far())
        await loop.close()
        return recorder.batches, after

    batches, after = run(scenario())
    assert batches == [["running"], ["next"]] and after == ["done next"]


def test_close_answers_every_accepted_job_then_refuses():
    async def scenario():
        recorder = Recorder()
        recorder.release.clear()
        loop = started(recorder, max_batch=2)
        accepted = [asyncio.create_task(loop.submit([f"j{i}"], {}, far())) for i in range(5)]
        await asyncio.to_thread(recorder.started.wait)
        closing = asyncio.create_task(loop.close())
        await asyncio.sleep(0)
        with pytest.raises(ModelUnavailable):
            await loop.submit(["too late"], {}, far())
        recorder.release.set()
        await closing
        return [await task for task in accepted]

    assert run(scenario()) == [[f"done j{i}"] for i in range(5)]


def test_a_crashing_batch_fails_its_jobs_not_the_loop():
    calls = []

    def flaky(jobs, references):
        calls.append(list(jobs))
        if len(calls) == 1:
            raise RuntimeError("engine bug")
        return [f"done {job}" for job in jobs]

    async def scenario():
        loop = started(flaky)
        first = await loop.submit(["a"], {}, far())
        second = await loop.submit(["b"], {}, far())
        await loop.close()
        return first, second

    first, second = run(scenario())
    assert isinstance(first[0], RuntimeError) and second == ["done b"]
