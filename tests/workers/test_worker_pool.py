"""`insid3 worker` processes fed through ``RedisBackend`` (the API's client) and the raw protocol:
batching, exactly-one answers after kill -9, dead letters."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest

from core.requests import SegmentRequest
from core.serving import JobFailed
from core.types import SegmentationResult
from tests.support.images import small_scene
from tests.support.metrics import scrape
from tests.support.net import eventually, free_port
from tests.workers.helpers import Launcher, queue_cli, run_with_backend, served_queue
from workers.client import RedisBackend
from workers.codec import RemoteError, decode_reply, remote_exception
from workers.connection import connect
from workers.jobs import Job
from workers.keys import GROUP

T = TypeVar("T")


@pytest.fixture(scope="module")
def steady(launcher: Launcher) -> int:
    """A worker that stays up for the whole module; returns its metrics port."""
    port = free_port()
    launcher.worker("steady", port, "--max-batch", "8", "--max-wait-ms", "100", "--visibility-timeout-s", "3",
                    "--max-attempts", "3")
    return port


def with_backend(launcher: Launcher, scenario: Callable[[RedisBackend], Awaitable[T]]) -> T:
    """Run ``scenario`` with a started ``RedisBackend`` of this module's database."""
    return run_with_backend(launcher.redis_url, scenario)


def deadline() -> float:
    return time.time() + 60


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def test_concurrent_requests_share_batches_with_unbatched_results(launcher: Launcher, steady: int) -> None:
    targets = [small_scene(100 + i).png for i in range(8)]
    scrapes: list[dict[str, float]] = []

    async def scenario(backend: RedisBackend) -> list[list[SegmentationResult]]:
        scene = small_scene(0)
        info, created = await backend.create_reference(scene.png, scene.mask_png, "ref", None, deadline())
        assert created
        alone = [(await backend.segment([t], [info], None, None, deadline()))[0] for t in targets]
        scrapes.append(scrape(steady))
        concurrent = await asyncio.gather(*(backend.segment([t], [info], None, None, deadline()) for t in targets))
        scrapes.append(scrape(steady))
        together = await backend.segment(targets, [info], None, None, deadline())
        scrapes.append(scrape(steady))
        return [alone, [result for [result] in concurrent], together]

    alone, concurrent, together = with_backend(launcher, scenario)
    assert any(result.area > 0 for result in alone)
    for batched in (concurrent, together):
        for single, result in zip(alone, batched, strict=True):
            assert np.array_equal(single.mask, result.mask)
            assert single.score == result.score
    before, middle, after = scrapes
    assert delta(middle, before, "insid3_worker_batch_jobs_sum") == 8
    assert delta(middle, before, "insid3_worker_batch_jobs_count") < 8  # concurrent requests shared batches
    assert delta(after, middle, "insid3_worker_batch_jobs_count") == 1  # one request of 8 targets: one batch
    assert delta(after, before, 'insid3_worker_jobs_total{outcome="processed"}') == 16


def test_corrupt_jobs_are_answered_at_once_and_exhausted_ones_dead_lettered(
        launcher: Launcher, steady: int, capsys: pytest.CaptureFixture[str]) -> None:
    before = scrape(steady)

    async def scenario() -> list[RemoteError]:
        client = connect(launcher.redis_url)
        queue = await served_queue(client)
        inbox = queue.keys.inbox("poison-test")
        poison = Job("", "poison", "segment", deadline(), inbox, 1, b"not a frame")
        exhausted = Job.new(SegmentRequest(small_scene(3).png, ["x"]), deadline(), inbox)
        exhausted = Job("", "exhausted", exhausted.kind, exhausted.deadline, inbox, 4, exhausted.body)
        assert (await queue.enqueue([poison, exhausted], max_backlog=100, alive_ttl_ms=60_000)).ids
        replies: dict[str, RemoteError] = {}
        for _ in range(30):
            for message in await queue.pop_replies(inbox, timeout_s=1):
                job_id, reply = decode_reply(message)
                assert isinstance(reply, RemoteError)
                replies[job_id] = reply
            if len(replies) == 2:
                break
        await client.aclose()
        return [replies["poison"], replies["exhausted"]]

    corrupt, dead = asyncio.run(scenario())
    assert corrupt.code == JobFailed.code and "corrupt job" in corrupt.detail  # deterministic: not retried
    assert dead.code == JobFailed.code and dead.extra == {"attempts": 4}
    error = remote_exception(dead)
    assert isinstance(error, JobFailed) and "dead-letter" in error.detail
    after = scrape(steady)
    assert delta(after, before, 'insid3_worker_jobs_total{outcome="retried"}') == 0
    assert delta(after, before, 'insid3_worker_jobs_total{outcome="dead_lettered"}') == 1
    assert "exhausted" in queue_cli(launcher, capsys, "dead-letters")
    stats = queue_cli(launcher, capsys, "stats")
    assert "dead letters 1" in stats and "worker steady" in stats
    assert "deleted 1 dead letters" in queue_cli(launcher, capsys, "dead-letters", "--purge")


def test_kill_9_mid_batch_still_answers_every_job_exactly_once(launcher: Launcher, steady: int) -> None:
    victim = launcher.worker("victim", free_port(), "--max-batch", "4", "--max-wait-ms", "50",
                             "--visibility-timeout-s", "3")
    info, _ = with_backend(launcher, lambda backend: backend.create_reference(
        small_scene(1).png, small_scene(1).mask_png, None, None, deadline()))
    before = scrape(steady)

    async def scenario() -> tuple[int, Counter[str], list[object], int]:
        client = connect(launcher.redis_url)
        queue = await served_queue(client)
        inbox = queue.keys.inbox("kill-test")
        jobs = [Job.new(SegmentRequest(small_scene(200 + i).png, [info.reference_id]), time.time() + 120, inbox)
                for i in range(40)]
        assert len((await queue.enqueue(jobs, max_backlog=1000, alive_ttl_ms=600_000)).ids) == 40

        async def victim_pending() -> int:
            rows = await client.xpending_range(queue.keys.stream, GROUP, "-", "+", 100, consumername="victim")
            return len(rows)

        async with asyncio.timeout(30):  # bounded: a victim that never holds a job fails the test
            while await victim_pending() == 0:
                await asyncio.sleep(0.002)
        os.kill(victim.pid, signal.SIGKILL)
        victim.popen.wait()
        held_at_death = await victim_pending()

        answers: Counter[str] = Counter()
        results = []
        for _ in range(120):  # bounded: a lost job fails the test instead of hanging it
            if len(answers) >= len(jobs):
                break
            for message in await queue.pop_replies(inbox, timeout_s=1):
                job_id, result = decode_reply(message)
                answers[job_id] += 1
                results.append(result)
        for _ in range(200):
            if not ((stats := await queue.stats()).pending or stats.backlog):
                break
            await asyncio.sleep(0.05)
        late = await client.llen(inbox)  # every answer is pushed with its XACK: none can still come
        await client.aclose()
        return held_at_death, answers, results, late

    held_at_death, answers, results, late = asyncio.run(scenario())
    assert held_at_death > 0  # killed while holding unanswered jobs
    assert len(answers) == 40 and set(answers.values()) == {1} and late == 0
    assert all(isinstance(result, SegmentationResult) for result in results)
    assert delta(scrape(steady), before, 'insid3_worker_jobs_total{outcome="reclaimed"}') >= held_at_death


def test_expired_jobs_are_skipped_unanswered(launcher: Launcher, steady: int) -> None:
    before = scrape(steady)

    async def scenario() -> None:
        client = connect(launcher.redis_url)
        queue = await served_queue(client)
        inbox = queue.keys.inbox("expiry-test")
        await queue.enqueue([Job.new(SegmentRequest(small_scene(3).png, ["x"]), time.time() - 1, inbox)], 100)
        eventually(lambda: scrape(steady).get('insid3_worker_jobs_total{outcome="expired"}', 0)
                   > before.get('insid3_worker_jobs_total{outcome="expired"}', 0), what="the expired job to be skipped")
        assert await client.llen(inbox) == 0
        await client.aclose()

    asyncio.run(scenario())


def test_a_reference_gone_after_the_api_resolved_it_is_the_workers_404(launcher: Launcher, steady: int) -> None:
    """The enqueue script no longer looks at references: a job naming one deleted meanwhile is
    answered reference_not_found by the worker, once."""

    async def scenario() -> RemoteError:
        client = connect(launcher.redis_url)
        queue = await served_queue(client)
        inbox = queue.keys.inbox("gone-test")
        job = Job.new(SegmentRequest(small_scene(3).png, ["0" * 32]), deadline(), inbox)
        assert (await queue.enqueue([job], 100, alive_ttl_ms=60_000)).ids
        [message] = await queue.pop_replies(inbox, timeout_s=30)
        await client.aclose()
        job_id, reply = decode_reply(message)
        assert job_id == job.job_id and isinstance(reply, RemoteError)
        return reply

    reply = asyncio.run(scenario())
    assert reply.code == "reference_not_found" and reply.extra == {"reference_id": "0" * 32}


def test_a_job_a_live_worker_stalled_on_is_dead_lettered_not_handed_on(launcher: Launcher, steady: int) -> None:
    before = scrape(steady)

    async def scenario() -> RemoteError:
        client = connect(launcher.redis_url)
        queue = await served_queue(client)
        inbox = queue.keys.inbox("stall-test")
        job = Job.new(SegmentRequest(small_scene(5).png, ["x"]), deadline(), inbox)
        # "stuck" takes the job in the same transaction as it is added (before steady's blocked read),
        # keeps its heartbeat alive and never answers: a live worker stalled on it.
        await client.set(queue.keys.worker("stuck"), "{}", px=60_000)
        async with client.pipeline(transaction=True) as pipe:
            pipe.xadd(queue.keys.stream, job.fields())
            pipe.xreadgroup(GROUP, "stuck", {queue.keys.stream: ">"}, count=1)
            _, [[_, [(entry_id, _)]]] = await pipe.execute()
        try:
            async with asyncio.timeout(30):  # bounded: the visibility timeout is 3 s
                [message] = await queue.pop_replies(inbox, timeout_s=30)
        finally:
            await client.delete(queue.keys.worker("stuck"))
        [(_, letter)] = [row for row in await queue.dead_letters(100) if row[1]["job"] == job.job_id]
        assert letter["entry"] == entry_id.decode()
        await client.aclose()
        job_id, reply = decode_reply(message)
        assert job_id == job.job_id and isinstance(reply, RemoteError)
        return reply

    reply = asyncio.run(scenario())
    assert reply.code == JobFailed.code and "stalled on it" in reply.detail and "not handed" in reply.detail
    after = scrape(steady)
    assert delta(after, before, 'insid3_worker_jobs_total{outcome="dead_lettered"}') == 1
    assert delta(after, before, 'insid3_worker_jobs_total{outcome="processed"}') == 0
    assert delta(after, before, 'insid3_worker_jobs_total{outcome="failed"}') == 0


def test_jobs_taken_over_from_a_dead_worker_run_one_at_a_time(launcher: Launcher, steady: int) -> None:
    info, _ = with_backend(launcher, lambda backend: backend.create_reference(
        small_scene(6).png, small_scene(6).mask_png, None, None, deadline()))
    before = scrape(steady)

    async def scenario() -> list[object]:
        client = connect(launcher.redis_url)
        queue = await served_queue(client)
        inbox = queue.keys.inbox("takeover-test")
        jobs = [Job.new(SegmentRequest(small_scene(600 + i).png, [info.reference_id]), deadline(), inbox)
                for i in range(3)]
        # "gone" takes the jobs as they are added (before steady's blocked read) and has no heartbeat:
        # a worker that died holding them.
        await queue.keep_alive(inbox, 60_000)
        async with client.pipeline(transaction=True) as pipe:
            for job in jobs:
                pipe.xadd(queue.keys.stream, job.fields())
            pipe.xreadgroup(GROUP, "gone", {queue.keys.stream: ">"}, count=3)
            *_, [[_, held]] = await pipe.execute()
        assert len(held) == 3
        results = []
        async with asyncio.timeout(60):  # bounded: a lost job fails the test
            while len(results) < 3:
                results += [decode_reply(m)[1] for m in await queue.pop_replies(inbox, timeout_s=1)]
        await client.aclose()
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(result, SegmentationResult) for result in results)
    after = scrape(steady)
    assert delta(after, before, 'insid3_worker_jobs_total{outcome="reclaimed"}') == 3
    assert delta(after, before, "insid3_worker_batch_jobs_count") == 3  # three engine calls of one job
    assert delta(after, before, "insid3_worker_batch_jobs_sum") == 3
