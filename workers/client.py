"""``RedisBackend``: the API side of the worker pool (``insid3 serve --redis-url``).

Jobs go to the stream of the model that must run them with a deadline and this process's inbox;
one background task blocks on the inbox (BLMPOP) and hands every reply to the request waiting for
it, so no request polls. Another renews the inbox's liveness: workers drop the jobs of an API
process that is gone. Both are supervised (restarted with backoff; ``liveness`` fails while one
keeps failing). When the connection to Redis is lost, waiting requests fail with 503 (their
replies may be lost); new requests get 503 with the reason until Redis is back, and so does a
Redis that refuses writes (out of memory, read-only replica). A request cancelled while queued
(its client went away) marks its jobs cancelled so that no worker runs them.

Routing: jobs for stored references go to the stream of the workers of the model that encoded
them (model id and image size of the records; references of several are refused before queueing);
new references and inline references go to the configured model (``model_size`` and ``image_size``
of ``insid3 serve``) when a worker serves it, else to the model of the most recently started worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from prometheus_client import Gauge
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from core.errors import IncompatibleReferenceError, Insid3Error
from core.references import ReferencePolicy
from core.requests import MatchRequest, ReferenceRequest, Request, SegmentRequest
from core.serving import (
    DEFAULT_TENANT,
    DeadlineExceeded,
    ModelUnavailable,
    QueueFull,
    ReferencePage,
    StoredReference,
    unwrap,
)
from core.types import MatchResult, SegmentationResult
from workers.codec import ProtocolError, ReferenceCreated, RemoteError, Result, decode_reply, remote_exception
from workers.connection import REDIS_DOWN, connect
from workers.jobs import Job
from workers.keys import DEFAULT_KEYS, Keys, model_key
from workers.producer import Producer
from workers.references import RedisReferenceStorage
from workers.supervision import Health, supervise

log = logging.getLogger("insid3.app")
T = TypeVar("T")

REPLY_BLOCK_S = 1.0  # one BLMPOP on the inbox blocks at most this long (bounds the time close() takes)
HEARTBEAT_S = 1.0  # renewal period of this process's inbox liveness
HEARTBEAT_TTL_MS = 3000  # workers drop this process's jobs when it has not renewed it for this long
MODELS_TTL_S = 1.0  # how long the list of served models is cached

DEAD_LETTERS = Gauge("insid3_dead_letters", "Jobs in the dead-letter stream (Redis mode)")


def redact(url: str) -> str:
    """``url`` without its credentials (user info and query string)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host, query="").geturl()


def _result(result: Result, expected: type[T]) -> T:
    """A worker's answer as a result, or its error raised."""
    return unwrap(remote_exception(result) if isinstance(result, RemoteError) else result, expected)


@dataclass(frozen=True)
class QueueLimits:
    """How the API side uses the queue (``insid3 serve`` settings)."""

    max_backlog: int  # queued jobs before 503 + Retry-After
    retry_after_s: int
    reference_ttl_s: float  # default lifetime of a reference
    drain_timeout_s: float  # how long close() waits for jobs in flight
    reference_quota: int = 0  # live references per tenant (0: no limit)
    model_size: str = ""  # the preferred model of new references ("": the newest served)
    image_size: int = 0


def _made_by(references: Sequence[StoredReference]) -> tuple[str, int]:
    """The model and image size that encoded every one of ``references``; a k-shot request mixing
    several is refused before it is queued (no worker could run it)."""
    makers: dict[tuple[str, int], str] = {}
    for record in references:
        makers.setdefault((record.model, record.image_size), record.reference_id)
    if len(makers) > 1:
        mixed = ", ".join(f"{ref} by {model} at {size}" for (model, size), ref in makers.items())
        raise IncompatibleReferenceError(
            f"the references were encoded by different models or image sizes ({mixed}); a worker runs one "
            "model at one image size, so references used together must share them: encode them again with one")
    [made_by] = makers
    return made_by


def redis_refusal(exc: ResponseError) -> str:
    """A human reason for a command Redis refused."""
    message = str(exc)
    if isinstance(exc, OutOfMemoryError) or message.startswith("OOM"):
        return ("Redis is out of memory (maxmemory reached): no new work can be queued until memory is "
                "freed or maxmemory raised")
    if isinstance(exc, ReadOnlyError) or message.startswith("READONLY"):
        return "Redis is a read-only replica: point --redis-url at the primary"
    return f"Redis refused the command: {message}"


class RedisBackend:
    """``core.serving.InferenceBackend`` on the Redis Streams worker pool."""

    def __init__(self, redis_url: str, limits: QueueLimits, keys: Keys = DEFAULT_KEYS) -> None:
        self._limits = limits
        self._where = redact(redis_url)
        self._client = connect(redis_url)
        self._queue = Producer(self._client, keys)
        self._references = ReferencePolicy(RedisReferenceStorage(self._client, keys), limits.reference_ttl_s,
                                           limits.reference_quota)
        self._inbox = keys.inbox(uuid.uuid4().hex)
        self._waiting: dict[str, asyncio.Future[Result]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._closing = False
        self._health = Health()
        self._models: tuple[float, dict[str, dict[str, object]]] = (0.0, {})
        self._cancelling: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(supervise("reply reader", self._read_replies, 0, self._health, self._stopping, log,
                                          max_backoff_s=1.0), name="insid3-redis-replies"),
            asyncio.create_task(supervise("inbox heartbeat", self._heartbeat, HEARTBEAT_S, self._health,
                                          self._stopping, log, max_backoff_s=HEARTBEAT_S),
                                name="insid3-redis-heartbeat"),
        ]

    async def close(self) -> None:
        self._closing = True
        if self._waiting:
            await asyncio.wait(list(self._waiting.values()), timeout=self._limits.drain_timeout_s)
        self._stopping.set()
        for task in self._tasks:
            task.cancel()  # redis-py may swallow it mid-command: the loops also check _stopping
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._cancelling:
            await asyncio.wait(self._cancelling, timeout=1.0)
        self._fail_waiting(ModelUnavailable("the server is shutting down"))
        await self._client.aclose()

    def liveness(self) -> str | None:
        """None while the background loops run, else why this process should be restarted."""
        stopped = [task.get_name() for task in self._tasks if task.done()]
        if stopped and not self._stopping.is_set():
            return f"background task(s) stopped: {', '.join(stopped)}"
        return self._health.reason()

    async def readiness(self) -> str | None:
        try:
            models = await self._served_models(fresh=True)
        except REDIS_DOWN as exc:
            return f"Redis at {self._where} is unreachable: {exc}"
        except ResponseError as exc:
            return redis_refusal(exc)
        if not models:
            return (f"no worker is serving the job queue at {self._where}; "
                    f"start one with `insid3 worker --redis-url {self._where}`")
        return None

    async def served_models(self) -> dict[str, dict[str, object]]:
        """The models live workers serve (several during a rolling upgrade), by model key."""
        with self._redis_errors():
            return await self._served_models(fresh=True)

    # ---------------------------------------------------------------------------- references

    async def create_reference(
        self, image: bytes, mask: bytes | None, name: str | None, ttl_s: float | None, deadline: float,
        *, owner: str = DEFAULT_TENANT,
    ) -> tuple[StoredReference, bool]:
        """The quota is checked here, when the request arrives (concurrent creates may pass it by
        their number); the worker that encodes it stores or refreshes it."""
        with self._redis_errors():
            await self._references.admit(owner)
        request = ReferenceRequest(image, mask, name, self._references.lifetime(ttl_s), owner=owner)
        [result] = await self._submit([request], deadline)
        created = _result(result, ReferenceCreated)
        return created.record, created.created

    async def get_reference(self, reference_id: str, *, scope: str = DEFAULT_TENANT) -> StoredReference:
        with self._redis_errors():
            return await self._references.resolve(reference_id, scope)

    async def delete_reference(self, reference_id: str, *, scope: str = DEFAULT_TENANT,
                               version: str | None = None) -> None:
        with self._redis_errors():
            await self._references.delete(reference_id, scope, version)

    async def list_references(self, offset: int, limit: int, *, scope: str = DEFAULT_TENANT) -> ReferencePage:
        with self._redis_errors():
            return await self._references.listing(scope, offset, limit)

    # ---------------------------------------------------------------------------- inference

    async def _served_models(self, fresh: bool = False) -> dict[str, dict[str, object]]:
        at, models = self._models
        if fresh or time.monotonic() - at > MODELS_TTL_S:
            models = await self._queue.live_models()
            self._models = (time.monotonic(), models)
        return models

    async def _route(self, references: Sequence[StoredReference]) -> str:
        """The model key whose workers must run jobs on ``references`` (or on new references)."""
        models = await self._served_models()
        if not models:
            raise ModelUnavailable(f"no worker is serving the job queue at {self._where}")
        if references:
            made_by = _made_by(references)
            return next((key for key, d in models.items() if (d.get("model"), d.get("image_size")) == made_by),
                        model_key(*made_by))
        wanted = (self._limits.model_size, self._limits.image_size)
        preferred = [key for key, d in models.items() if (d.get("model_size"), d.get("image_size")) == wanted]
        if preferred:
            return preferred[0]
        return max(models, key=lambda key: float(str(models[key].get("started_at", 0))))

    async def segment(
        self, targets: list[bytes], references: Sequence[StoredReference], tau: float | None,
        merge_threshold: float | None, deadline: float,
    ) -> list[SegmentationResult]:
        ids = [record.reference_id for record in references]
        requests: list[Request] = [SegmentRequest(t, ids, tau, merge_threshold) for t in targets]
        results = await self._submit(requests, deadline, references)
        return [_result(result, SegmentationResult) for result in results]

    async def match(
        self, target: bytes, reference: StoredReference, points: list[tuple[float, float]], debiased: bool,
        deadline: float,
    ) -> MatchResult:
        request = MatchRequest(target, reference.reference_id, points, debiased)
        [result] = await self._submit([request], deadline, [reference])
        return _result(result, MatchResult)

    async def queue_depth(self) -> int:
        """The stream backlog (0 while Redis is unreachable); refreshes ``insid3_dead_letters``."""
        try:
            depth = await self._queue.backlog()
            DEAD_LETTERS.set(await self._queue.dead_letter_count())
        except REDIS_DOWN:
            return 0
        return depth

    # ---------------------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _redis_errors(self) -> Iterator[None]:
        """Redis being unreachable, or refusing a command (out of memory...), is a 503 with the reason."""
        try:
            yield
        except REDIS_DOWN as exc:
            raise ModelUnavailable(f"Redis at {self._where} is unreachable: {exc}") from None
        except ResponseError as exc:
            log.warning("Redis refused a command: %s", exc)
            raise ModelUnavailable(redis_refusal(exc)) from None

    async def _submit(self, requests: Sequence[Request], deadline: float,
                      references: Sequence[StoredReference] = ()) -> list[Result]:
        """Queue one job per request (all or none) and wait for every answer until ``deadline``."""
        if self._closing:
            raise ModelUnavailable("the server is shutting down")
        if deadline <= time.time():
            raise DeadlineExceeded("the request's deadline passed before its job was queued")
        jobs = [Job.new(request, deadline, self._inbox) for request in requests]
        loop = asyncio.get_running_loop()
        futures = {job.job_id: loop.create_future() for job in jobs}
        self._waiting.update(futures)
        try:
            with self._redis_errors():
                model = await self._route(references)
                enqueued = await self._queue.enqueue(jobs, self._limits.max_backlog, model, HEARTBEAT_TTL_MS)
            if enqueued.backlog is not None:
                retry = self._limits.retry_after_s
                raise QueueFull(retry, f"the job queue is full ({enqueued.backlog} of {self._limits.max_backlog} "
                                       f"jobs waiting); retry in {retry:g} s")
            if enqueued.no_worker:
                raise ModelUnavailable(f"no worker is serving the model {model} at {self._where}")
            try:
                async with asyncio.timeout(deadline - time.time()):
                    return list(await asyncio.gather(*futures.values()))
            except TimeoutError:
                raise DeadlineExceeded("no worker answered before the request's deadline") from None
            except asyncio.CancelledError:
                unanswered = [job_id for job_id, future in futures.items() if future.cancelled() or not future.done()]
                self._cancel_jobs(unanswered, deadline)
                raise
        finally:
            for job_id, future in futures.items():
                self._waiting.pop(job_id, None)
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # marks a failure nobody awaited (gather stops at the first) as seen

    def _cancel_jobs(self, job_ids: list[str], deadline: float) -> None:
        """Mark the jobs of a cancelled request cancelled, in the background (its caller is gone)."""
        if not job_ids:
            return
        task = asyncio.create_task(self._queue.cancel(job_ids, round((deadline - time.time()) * 1000)))
        self._cancelling.add(task)
        task.add_done_callback(self._cancel_done)

    def _cancel_done(self, task: asyncio.Task[None]) -> None:
        self._cancelling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not mark cancelled jobs: %s", task.exception())

    async def _heartbeat(self) -> None:
        await self._queue.keep_alive(self._inbox, HEARTBEAT_TTL_MS)

    async def _read_replies(self) -> None:
        """Hand the replies in this process's inbox to the requests waiting for them (one BLMPOP)."""
        try:
            messages = await self._queue.pop_replies(self._inbox, REPLY_BLOCK_S)
        except REDIS_DOWN as exc:
            if not self._stopping.is_set():
                self._fail_waiting(ModelUnavailable(f"lost the connection to Redis at {self._where}: {exc}"))
            raise
        for message in messages:
            try:
                job_id, result = decode_reply(message)
            except ProtocolError as exc:
                log.error("dropped a corrupt reply: %s", exc)
                continue
            future = self._waiting.pop(job_id, None)
            if future is not None and not future.done():
                future.set_result(result)

    def _fail_waiting(self, error: Insid3Error) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)
