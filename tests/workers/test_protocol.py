"""The queue protocol against a real redis-server: encoding, consumer group, exactly-one answer,
reclaim, retries, dead letters, trimming and the backlog bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from core.requests import MatchRequest, ReferenceRequest, SegmentRequest
from core.serving import JobFailed, StoredReference
from core.types import MatchResult, SegmentationResult
from tests.workers.helpers import Queue, run_with_redis
from workers.codec import (
    ProtocolError,
    ReferenceCreated,
    RemoteError,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    pack,
    unpack,
)
from workers.jobs import Job
from workers.keys import GROUP, Keys, inbox_alive

JOB_FAILED = JobFailed.code

Scenario = Callable[[Queue], Awaitable[None]]


@pytest.fixture
def run_with_queue(redis_url: str) -> Callable[[Scenario], None]:
    """Runs a scenario on a queue whose keys no other test uses, with one worker marked alive."""

    def run(scenario: Scenario) -> None:
        async def with_queue(client: Redis, keys: Keys) -> None:
            queue = Queue(client, keys)
            await queue.announce("w", {"name": "w"}, 60_000)
            await scenario(queue)

        run_with_redis(redis_url, with_queue)

    return run


def _job(reply_to: str, deadline: float | None = None, target: bytes = b"img") -> Job:
    request = SegmentRequest(target, ["ref"], 0.5, None)
    return Job.new(request, deadline or time.time() + 60, reply_to)


# ------------------------------------------------------------------------------- encoding


def test_frames_round_trip_and_reject_garbage() -> None:
    header, blobs = unpack(pack({"a": [1, 2]}, [b"\x00\xff", b"", b"xyz"]))
    assert header == {"a": [1, 2]}
    assert blobs == [b"\x00\xff", b"", b"xyz"]
    for garbage in (b"", b"hello world", pack({}, [b"abc"])[:-1]):
        with pytest.raises(ProtocolError):
            unpack(garbage)


@pytest.mark.parametrize("request_", [
    ReferenceRequest(b"\x89PNG...", b"mask", "cat", 3600.0),
    ReferenceRequest(b"\x89PNG...", None, None, 0.0),
    SegmentRequest(b"target", ["r1", "r2"], 0.4, 0.3),
    SegmentRequest(b"target", ["r1"]),
    MatchRequest(b"target", "r1", [(1.5, 2.0), (3.0, 4.25)], False),
])
def test_requests_round_trip(request_: ReferenceRequest | SegmentRequest | MatchRequest) -> None:
    job = Job.new(request_, 123.5, "inbox")
    assert decode_request(job.kind, job.body) == request_
    assert decode_request(job.kind, encode_request(request_)) == request_


def test_corrupt_job_bodies_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        decode_request("segment", pack({"tau": None}, [b"target"]))
    with pytest.raises(ProtocolError):
        decode_request("explode", pack({}, []))


def test_replies_round_trip() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.5
    segmentation = SegmentationResult(mask, 0.75, {"pipeline_ms": 1.5})
    job_id, decoded = decode_reply(encode_reply("j1", segmentation))
    assert job_id == "j1" and isinstance(decoded, SegmentationResult)
    assert np.array_equal(decoded.mask, mask)
    assert decoded.score == 0.75 and decoded.timings == {"pipeline_ms": 1.5}
    assert decoded.bbox == segmentation.bbox and decoded.area == segmentation.area

    match = MatchResult(rng.random((5, 2)).astype(np.float32), rng.random(5).astype(np.float32), {"x": 1.0})
    _, decoded_match = decode_reply(encode_reply("j2", match))
    assert isinstance(decoded_match, MatchResult)
    assert np.array_equal(decoded_match.points, match.points)
    assert np.array_equal(decoded_match.confidence, match.confidence)

    now = datetime.now(UTC)
    record = StoredReference("a" * 32, "apple", 3, 2, 4, "dinov3_vits16-x", 128, now, now + timedelta(seconds=5))
    created = ReferenceCreated(record, True)
    assert decode_reply(encode_reply("j3", created)) == ("j3", created)
    error = RemoteError("reference_not_found", "no reference 'x'", {"reference_id": "x"})
    assert decode_reply(encode_reply("j4", error)) == ("j4", error)


# ------------------------------------------------------------------------- consumer group


def test_jobs_are_read_once_and_answered_exactly_once(run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        inbox = queue.keys.inbox("api")
        jobs = [_job(inbox, target=bytes([i])) for i in range(3)]
        assert len((await queue.enqueue(jobs, max_backlog=10)).ids) == 3
        assert await queue.backlog() == 3
        first = await queue.read("a", count=2, block_ms=10)
        second = await queue.read("b", count=5, block_ms=10)
        assert [j.job_id for j in first + second] == [j.job_id for j in jobs]
        assert [j.body for j in first + second] == [j.body for j in jobs]
        assert await queue.backlog() == 0
        assert await queue.read("b", count=5, block_ms=10) == []

        reply = RemoteError("invalid_image", "not an image")
        assert await queue.answer([(first[0], reply), (first[1], reply)]) == [True, True]
        assert await queue.answer([(first[0], reply)]) == [False]  # a second answer is dropped
        replies = await queue.pop_replies(inbox, timeout_s=1)
        assert sorted(decode_reply(m)[0] for m in replies) == sorted(j.job_id for j in first)
        stats = await queue.stats()
        assert stats.pending == 1 and {c.name: c.pending for c in stats.consumers} == {"a": 0, "b": 1}

    run_with_queue(scenario)


def test_reclaim_takes_over_idle_jobs_with_their_delivery_count(
        run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        jobs = [_job(queue.keys.inbox("api")) for _ in range(2)]
        await queue.enqueue(jobs, max_backlog=10)
        held = await queue.read("dead-worker", count=2, block_ms=10)
        assert (await queue.reclaim("survivor", min_idle_ms=60_000, count=10)).jobs == []
        await asyncio.sleep(0.05)
        reclaimed = await queue.reclaim("survivor", min_idle_ms=20, count=10)
        assert [j.job_id for j in reclaimed.jobs] == [j.job_id for j in held]
        assert [j.tries for j in reclaimed.jobs] == [2, 2]
        consumers = {c.name: c.pending for c in (await queue.stats()).consumers}
        assert consumers == {"dead-worker": 0, "survivor": 2}
        assert await queue.prune_consumers(min_idle_ms=0) == ["dead-worker"]

    run_with_queue(scenario)


def test_requeue_counts_tries_and_dead_letter_answers_the_caller(
        run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        inbox = queue.keys.inbox("api")
        job = _job(inbox)
        await queue.enqueue([job], max_backlog=10)
        [first] = await queue.read("w1", count=1, block_ms=10)
        assert await queue.requeue(first) is not None
        assert await queue.requeue(first) is None  # already acknowledged
        [second] = await queue.read("w1", count=1, block_ms=10)
        assert (second.job_id, second.tries, second.entry_id != first.entry_id) == (job.job_id, 2, True)

        assert await queue.dead_letter(second, "RuntimeError: boom", "w1")
        assert not await queue.dead_letter(second, "RuntimeError: boom", "w1")
        [message] = await queue.pop_replies(inbox, timeout_s=1)
        job_id, reply = decode_reply(message)
        assert job_id == job.job_id and isinstance(reply, RemoteError)
        assert reply.code == JOB_FAILED and "boom" in reply.detail and reply.extra == {"attempts": 2}
        [(_, letter)] = await queue.dead_letters(10)
        assert letter["job"] == job.job_id and letter["error"] == "RuntimeError: boom"
        assert letter["attempts"] == "2" and letter["consumer"] == "w1"
        stats = await queue.stats()
        assert (stats.dead_letters, stats.pending, stats.backlog) == (1, 0, 0)
        assert await queue.purge_dead_letters() == 1

    run_with_queue(scenario)


def test_at_maxmemory_answers_and_liveness_get_through_new_work_does_not(
        run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        inbox = queue.keys.inbox("api")
        await queue.enqueue([_job(inbox), _job(inbox)], max_backlog=10)
        answered, dead = await queue.read("w", count=2, block_ms=10)
        await queue.client.config_set("maxmemory", 1)
        try:
            with pytest.raises(ResponseError, match="maxmemory"):
                await queue.enqueue([_job(inbox)], max_backlog=10)
            with pytest.raises(ResponseError, match="maxmemory"):
                await queue.requeue(dead)
            assert await queue.answer([(answered, RemoteError("invalid_image", "not an image"))]) == [True]
            assert await queue.dead_letter(dead, "RuntimeError: boom", "w")
            await queue.keep_alive(inbox, 60_000)
            assert abs(await queue.announce("w", {"name": "w"}, 60_000) - time.time()) < 60
        finally:
            await queue.client.config_set("maxmemory", 0)
        replies = await queue.pop_replies(inbox, timeout_s=1)
        assert sorted(decode_reply(m)[0] for m in replies) == sorted([answered.job_id, dead.job_id])
        assert await queue.client.exists(inbox_alive(inbox), queue.keys.worker("w")) == 2

    run_with_queue(scenario)


def test_malformed_entries_are_dropped(run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        await queue.ensure_group()
        await queue.client.xadd(queue.keys.stream, {"junk": "1"})
        good = _job(queue.keys.inbox("api"))
        await queue.enqueue([good], max_backlog=10)
        assert [j.job_id for j in await queue.read("w", count=10, block_ms=10)] == [good.job_id]
        assert (await queue.stats()).pending == 1  # the malformed entry was acknowledged

    run_with_queue(scenario)


# --------------------------------------------------------------------- bounds and checks


def test_backlog_bound_refuses_whole_requests(run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        inbox = queue.keys.inbox("api")
        assert len((await queue.enqueue([_job(inbox) for _ in range(3)], max_backlog=4)).ids) == 3
        refused = await queue.enqueue([_job(inbox) for _ in range(2)], max_backlog=4)
        assert refused.ids == [] and refused.backlog == 3
        assert (await queue.stats()).length == 3  # all or none
        assert len((await queue.enqueue([_job(inbox)], max_backlog=4)).ids) == 1
        await queue.read("w", count=2, block_ms=10)  # delivered jobs leave the backlog
        assert await queue.backlog() == 2
        assert len((await queue.enqueue([_job(inbox) for _ in range(2)], max_backlog=4)).ids) == 2

    run_with_queue(scenario)


def test_enqueue_checks_live_workers(run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        inbox = queue.keys.inbox("api")
        assert len((await queue.enqueue([_job(inbox)], 10)).ids) == 1
        await queue.client.delete(queue.keys.alive)
        assert (await queue.enqueue([_job(inbox)], 10)).no_worker

    run_with_queue(scenario)


# ------------------------------------------------------------------------------- trimming


def test_trim_acked_keeps_every_unfinished_entry(run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        inbox = queue.keys.inbox("api")
        await queue.enqueue([_job(inbox, target=bytes([i])) for i in range(6)], max_backlog=10)
        read = await queue.read("w", count=4, block_ms=10)
        await queue.answer([(job, RemoteError("x", "y")) for job in read[:1] + read[2:4]])
        await queue.trim_acked()
        stats = await queue.stats()  # read[1] is still pending: it and everything after stay
        assert (stats.length, stats.pending, stats.backlog) == (5, 1, 2)
        await queue.answer([(read[1], RemoteError("x", "y"))])
        await queue.trim_acked()
        assert (await queue.stats()).length == 2
        rest = await queue.read("w", count=10, block_ms=10)
        assert [j.request().target for j in rest] == [bytes([4]), bytes([5])]

    run_with_queue(scenario)


def test_trim_with_clear_pending_leaves_no_ghost_entries(run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        inbox = queue.keys.inbox("api")
        await queue.enqueue([_job(inbox) for _ in range(4)], max_backlog=10)
        await queue.read("w", count=3, block_ms=10)
        assert await queue.trim(maxlen=1, clear_pending=False) == (3, 0)
        stats = await queue.stats()
        assert (stats.length, stats.pending, stats.backlog) == (1, 3, 1)  # 3 ghosts in the pending list
        reclaimed = await queue.reclaim("other", min_idle_ms=0, count=10)
        assert reclaimed.jobs == [] and len(reclaimed.deleted) == 3  # XAUTOCLAIM drops ghosts

        await queue.enqueue([_job(inbox) for _ in range(3)], max_backlog=10)
        await queue.read("w", count=4, block_ms=10)
        assert await queue.trim(maxlen=1, clear_pending=True) == (3, 3)
        stats = await queue.stats()
        assert (stats.length, stats.pending, stats.backlog) == (1, 1, 0)
        pending = await queue.client.xpending_range(queue.keys.stream, GROUP, "-", "+", 10)
        first = await queue.client.xrange(queue.keys.stream)
        assert [row["message_id"] for row in pending] == [first[0][0]]

    run_with_queue(scenario)


def test_expired_jobs_can_be_skipped(run_with_queue: Callable[[Scenario], None]) -> None:
    async def scenario(queue: Queue) -> None:
        job = _job(queue.keys.inbox("api"), deadline=time.time() - 1)
        await queue.enqueue([job], max_backlog=10)
        [read] = await queue.read("w", count=1, block_ms=10)
        assert read.deadline == job.deadline
        await queue.skip([read])
        assert (await queue.stats()).pending == 0
        assert await queue.pop_replies(queue.keys.inbox("api"), timeout_s=0.01) == []

    run_with_queue(scenario)
