"""``RedisBackend`` refusals that need no worker process: readiness, unknown references, the
backlog bound, deadlines, Redis unreachable, and the mapping of worker errors to exceptions."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from core.errors import IncompatibleReferenceError, InvalidImageError
from core.serving import DeadlineExceeded, JobFailed, ModelUnavailable, QueueFull, ReferenceNotFound
from tests.support.net import free_port
from tests.workers.conftest import database_url
from tests.workers.helpers import run_with_backend
from workers.client import RedisBackend
from workers.codec import RemoteError, remote_exception
from workers.keys import DEFAULT_KEYS

MODEL = "dinov3_test@64"  # the model key of the pretend worker


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

    async def scenario(backend: RedisBackend) -> None:
        reason = await backend.readiness()
        assert reason is not None and "no worker" in reason and "insid3 worker --redis-url" in reason
        with pytest.raises(ModelUnavailable, match="no worker"):
            await backend.segment([b"t"], [], None, None, time.time() + 5)
        pretend_worker(url, 60_000)
        async with asyncio.timeout(10):  # the backend caches the live models for a second
            while await backend.readiness() is not None:
                await asyncio.sleep(0.05)

    run_with_backend(url, scenario)


def test_unknown_references_are_refused_before_queueing(url: str) -> None:
    async def scenario(backend: RedisBackend) -> None:
        with pytest.raises(ReferenceNotFound) as caught:
            await backend.get_reference("nope")
        assert caught.value.reference_id == "nope"
        with pytest.raises(ReferenceNotFound):
            await backend.delete_reference("nope")

    run_with_backend(url, scenario)
    assert redis.Redis.from_url(url).xlen(DEFAULT_KEYS.for_model(MODEL).stream) == 0


def test_backlog_bound_and_deadlines(url: str) -> None:
    async def scenario(backend: RedisBackend) -> None:
        with pytest.raises(DeadlineExceeded):  # queued, never answered: no worker runs
            await backend.create_reference(b"i", b"m", None, None, time.time() + 0.2)
        with pytest.raises(QueueFull) as caught:  # 1 waiting + 2 > 2
            await backend.segment([b"a", b"b"], [], None, None, time.time() + 5)
        assert caught.value.retry_after_s == 3
        with pytest.raises(DeadlineExceeded):
            await backend.create_reference(b"i", b"m", None, None, time.time() - 1)
        assert await backend.queue_depth() == 1

    run_with_backend(url, scenario, max_backlog=2, retry_after_s=3)


def test_redis_unreachable_is_a_503() -> None:
    async def scenario(backend: RedisBackend) -> None:
        reason = await backend.readiness()
        assert reason is not None and "unreachable" in reason
        for call in (lambda: backend.segment([b"t"], [], None, None, time.time() + 5),
                     lambda: backend.get_reference("r"), lambda: backend.list_references(0, 10)):
            with pytest.raises(ModelUnavailable, match="unreachable"):
                await call()
        assert await backend.queue_depth() == 0

    run_with_backend(f"redis://127.0.0.1:{free_port()}/0", scenario)


def test_redis_out_of_memory_is_a_503_with_the_reason(url: str) -> None:
    client = redis.Redis.from_url(url)

    async def scenario(backend: RedisBackend) -> None:
        client.config_set("maxmemory", 1)
        try:
            with pytest.raises(ModelUnavailable, match="out of memory"):
                await backend.segment([b"t"], [], None, None, time.time() + 5)
        finally:
            client.config_set("maxmemory", 0)
        assert await backend.readiness() is None

    run_with_backend(url, scenario)


def test_a_cancelled_request_marks_its_queued_jobs_cancelled(url: str) -> None:
    async def scenario(backend: RedisBackend) -> None:
        task = asyncio.create_task(backend.segment([b"a", b"b"], [], None, None, time.time() + 30))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_with_backend(url, scenario)
    client = redis.Redis.from_url(url)
    job_ids = [fields[b"job"].decode() for _, fields in client.xrange(DEFAULT_KEYS.for_model(MODEL).stream)]
    assert len(job_ids) == 2
    assert all(client.exists(DEFAULT_KEYS.cancelled(job_id)) for job_id in job_ids)
