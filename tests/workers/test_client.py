"""``RedisBackend`` refusals that need no worker process: readiness, unknown references, the
backlog bound, deadlines, Redis unreachable, and the mapping of worker errors to exceptions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis

from core.errors import IncompatibleReferenceError, InvalidImageError
from core.serving import DeadlineExceeded, JobFailed, ModelUnavailable, QueueFull, ReferenceNotFound
from tests.conftest import free_port
from tests.workers.conftest import database_url
from workers.client import QueueLimits, RedisBackend
from workers.codec import RemoteError, remote_exception
from workers.keys import DEFAULT_KEYS

MODEL = "dinov3_test@64"  # the model key of the pretend worker

T = TypeVar("T")


def with_backend(url: str, scenario: Callable[[RedisBackend], Awaitable[T]], max_backlog: int = 64,
                 retry_after_s: int = 1) -> T:
    async def main() -> T:
        backend = RedisBackend(url, QueueLimits(max_backlog, retry_after_s, 86_400.0, 5.0))
        await backend.start()
        try:
            return await scenario(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


def pretend_worker(url: str, ttl_ms: int = 600_000) -> None:
    """Mark a worker of ``MODEL`` alive (none runs: jobs are never answered)."""
    client = redis.Redis.from_url(url)
    client.set(DEFAULT_KEYS.for_model(MODEL).model_alive, '{"started_at": 0}', px=ttl_ms)
    client.sadd(DEFAULT_KEYS.models, MODEL)


@pytest.fixture
def url(redis_url: str) -> str:
    """A fresh database where a worker is marked alive."""
    url = database_url(redis_url)
    pretend_worker(url)
    return url


def test_worker_errors_become_the_engines_exceptions() -> None:
    assert isinstance(remote_exception(RemoteError("invalid_image", "not an image")), InvalidImageError)
    assert isinstance(remote_exception(RemoteError("incompatible_reference", "x")), IncompatibleReferenceError)
    missing = remote_exception(RemoteError("reference_not_found", "gone", {"reference_id": "abc"}))
    assert isinstance(missing, ReferenceNotFound) and missing.reference_id == "abc"
    failed = remote_exception(RemoteError("job_failed", "failed 3 time(s)"))
    assert isinstance(failed, JobFailed) and failed.detail == "failed 3 time(s)"
    unknown = remote_exception(RemoteError("from_a_newer_worker", "detail"))
    assert isinstance(unknown, JobFailed) and unknown.code == "from_a_newer_worker"


def test_readiness_needs_a_live_worker(redis_url: str) -> None:
    url = database_url(redis_url)
    reason = with_backend(url, lambda backend: backend.readiness())
    assert reason is not None and "no worker" in reason and "insid3 worker --redis-url" in reason
    with pytest.raises(ModelUnavailable, match="no worker"):
        with_backend(url, lambda b: b.segment([b"t"], ["r"], None, None, time.time() + 5))
    pretend_worker(url, 60_000)
    assert with_backend(url, lambda backend: backend.readiness()) is None


def test_unknown_references_are_refused_before_queueing(url: str) -> None:
    with pytest.raises(ReferenceNotFound) as caught:
        with_backend(url, lambda b: b.match(b"t", "nope", [(1.0, 2.0)], True, time.time() + 5))
    assert caught.value.reference_id == "nope"
    with pytest.raises(ReferenceNotFound):
        with_backend(url, lambda b: b.get_reference("nope"))
    with pytest.raises(ReferenceNotFound):
        with_backend(url, lambda b: b.delete_reference("nope"))
    assert redis.Redis.from_url(url).xlen(DEFAULT_KEYS.for_model(MODEL).stream) == 0


def test_backlog_bound_and_deadlines(url: str) -> None:
    limits = {"max_backlog": 2, "retry_after_s": 3}
    with pytest.raises(DeadlineExceeded):  # queued, never answered: no worker runs
        with_backend(url, lambda b: b.create_reference(b"i", b"m", None, None, time.time() + 0.2), **limits)
    with pytest.raises(QueueFull) as caught:  # 1 waiting + 2 > 2
        with_backend(url, lambda b: b.segment([b"a", b"b"], [], None, None, time.time() + 5), **limits)
    assert caught.value.retry_after_s == 3
    with pytest.raises(DeadlineExceeded):
        with_backend(url, lambda b: b.create_reference(b"i", b"m", None, None, time.time() - 1), **limits)
    assert with_backend(url, lambda backend: backend.queue_depth(), **limits) == 1


def test_redis_unreachable_is_a_503() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    reason = with_backend(url, lambda backend: backend.readiness())
    assert reason is not None and "unreachable" in reason
    for call in (lambda b: b.segment([b"t"], ["r"], None, None, time.time() + 5),
                 lambda b: b.get_reference("r"), lambda b: b.list_references(0, 10)):
        with pytest.raises(ModelUnavailable, match="unreachable"):
            with_backend(url, call)
    assert with_backend(url, lambda backend: backend.queue_depth()) == 0


def test_redis_out_of_memory_is_a_503_with_the_reason(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.config_set("maxmemory", 1)
    try:
        with pytest.raises(ModelUnavailable, match="out of memory"):
            with_backend(url, lambda b: b.segment([b"t"], [], None, None, time.time() + 5))
    finally:
        client.config_set("maxmemory", 0)
    assert with_backend(url, lambda backend: backend.readiness()) is None


def test_a_cancelled_request_marks_its_queued_jobs_cancelled(url: str) -> None:
    async def scenario(backend: RedisBackend) -> None:
        task = asyncio.create_task(backend.segment([b"a", b"b"], [], None, None, time.time() + 30))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with_backend(url, scenario)
    client = redis.Redis.from_url(url)
    job_ids = [fields[b"job"].decode() for _, fields in client.xrange(DEFAULT_KEYS.for_model(MODEL).stream)]
    assert len(job_ids) == 2
    assert all(client.exists(DEFAULT_KEYS.cancelled(job_id)) for job_id in job_ids)
