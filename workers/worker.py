"""The worker loop: read jobs from its model's stream in batches, run them, answer each exactly once.

* Routing: a worker reads only the stream of its engine (``p:jobs:<model_id>@<image_size>``), so a
  pool mixing models or image sizes (a rolling upgrade) never runs a job on the wrong engine.
* Batching: after the first job arrives the worker waits at most ``max_wait_ms`` for up to
  ``max_batch`` jobs, then runs them in one ``Insid3.run_batch`` call.
* Liveness: the heartbeat renews ``p:worker:<name>`` every ``heartbeat_s`` with a TTL of
  ``heartbeat_ttl_s``. Every ``heartbeat_s`` each worker takes over the pending jobs of consumers
  whose heartbeat lapsed (killed, crashed, paused); XAUTOCLAIM after ``visibility_timeout_s`` of
  idleness is the backstop for live but stuck workers: a job a live worker stalled on is
  dead-lettered with that reason, never handed to the next worker. Jobs taken over from a dead
  worker run one at a time (one may be what killed it); a job tried ``max_attempts`` times (its
  workers died on it) is dead-lettered. A paused worker that resumes cannot answer
  twice: ``ANSWER`` is XACK-guarded.
* Dropped work: jobs whose deadline passed, whose caller cancelled them, or whose API process is
  gone are acknowledged unrun. Deadlines are Unix times of the API host's clock (keep NTP on).
* Failures: input errors are answered at once (4xx), never retried; only unexpected errors retry.
* Supervision: the heartbeat and the job loop restart with backoff on any error; a Redis error
  never ends the process; a loop that keeps failing makes ``/healthz`` answer 503.
* ``stop()`` (SIGTERM) drains: the current batch finishes and is answered, then the loop exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from core.engine import Insid3
from core.types import MatchResult, SegmentationResult
from workers import metrics
from workers.codec import ReferenceCreated, Result
from workers.connection import REDIS_DOWN, Backoff
from workers.consumer import Consumer, Reclaimed
from workers.execution import Executor
from workers.jobs import Job
from workers.keys import DEFAULT_KEYS, model_key
from workers.references import RedisReferenceStorage
from workers.settings import WorkerSettings
from workers.supervision import Health, supervise

log = logging.getLogger("insid3.worker")

READ_BLOCK_MS = 1000  # how long one idle read blocks (bounds how fast an idle worker notices stop())
WINDOW_POLL_S = 0.001  # poll period while a batch fills up


class Worker:
    """One consumer of its model's job stream, running one engine."""

    def __init__(self, settings: WorkerSettings, engine: Insid3, client: aioredis.Redis) -> None:
        self.settings = settings
        self.engine = engine
        self.model = settings.model_key or model_key(engine.model_id, engine.image_size)
        self.queue = Consumer(client, DEFAULT_KEYS.for_model(self.model))
        storage = RedisReferenceStorage(client, self.queue.keys, settings.reference_budget_bytes)
        self.executor = Executor(engine, storage)
        self.name = settings.name
        self.health = Health()
        self.started_at = time.time()
        self.batches = 0
        self.jobs = 0
        self._stopping = asyncio.Event()
        self._announced = asyncio.Event()
        self._clock_offset = 0.0  # Redis clock minus ours
        self._next_orphans = 0.0
        self._next_reclaim = 0.0

    @property
    def visibility_ms(self) -> int:
        return round(self.settings.visibility_timeout_s * 1000)

    def stop(self) -> None:
        """Finish the current batch, stop reading and return from ``run``."""
        if not self._stopping.is_set():
            log.info("worker %s draining", self.name)
        self._stopping.set()

    async def run(self) -> None:
        """Serve until ``stop()``."""
        heartbeat = asyncio.create_task(
            supervise("heartbeat", self._heartbeat, self.settings.heartbeat_s, self.health, self._stopping, log,
                      max_backoff_s=self.settings.heartbeat_s),
            name="insid3-worker-heartbeat")
        try:
            await supervise("job loop", self._step, 0, self.health, self._stopping, log, max_backoff_s=1.0)
        finally:
            self._stopping.set()
            await heartbeat
            with contextlib.suppress(*REDIS_DOWN, ResponseError):
                await self.queue.retire(self.name)
        log.info("worker %s stopped after %d batches, %d jobs", self.name, self.batches, self.jobs)

    async def _step(self) -> None:
        """One batch: read (once announced, so that no peer takes this worker for dead), run, answer."""
        if not self._announced.is_set():
            await self._sleep(0.05)
            return
        jobs = await self._next_batch()
        if jobs:
            await self._process(jobs)

    # -------------------------------------------------------------------------- reading

    async def _next_batch(self) -> list[Job]:
        """Jobs of dead or stuck workers when there are some, else new jobs gathered for at most
        ``max_wait_ms``."""
        reclaimed = await self._reclaim()
        if reclaimed:
            return reclaimed
        batch = self.settings.max_batch
        jobs = await self.queue.read(self.name, batch, READ_BLOCK_MS)
        window_end = time.monotonic() + self.settings.max_wait_ms / 1000.0
        while jobs and len(jobs) < batch and not self._stopping.is_set():
            remaining = window_end - time.monotonic()
            if remaining <= 0:
                break
            # Redis times blocked reads out with its `hz` resolution (100 ms by default), far too coarse
            # for a window of milliseconds: the window polls instead, only while a batch is forming.
            await asyncio.sleep(min(WINDOW_POLL_S, remaining))
            jobs += await self.queue.read(self.name, batch - len(jobs), block_ms=0)
        return jobs

    async def _reclaim(self) -> list[Job]:
        """Pending jobs of workers whose heartbeat lapsed (checked every ``heartbeat_s``), else of
        consumers idle for the visibility timeout (checked every half of it)."""
        batch, now = self.settings.max_batch, time.monotonic()
        found = Reclaimed([], [], [])
        if now >= self._next_orphans:
            found = await self.queue.reclaim_orphans(self.name, batch)
            self._next_orphans = now + (0 if found.jobs else self.settings.heartbeat_s)
        if not found.jobs and now >= self._next_reclaim:
            found = await self.queue.reclaim(self.name, self.visibility_ms, batch)
            full = len(found.jobs) + len(found.stalled) + len(found.malformed) == batch
            self._next_reclaim = now + (0 if full else min(max(self.settings.visibility_timeout_s / 2, 0.5), 30.0))
            if not found.jobs and not found.stalled:
                await self.queue.prune_consumers(self.visibility_ms)
            await self._dead_letter_stalled(found.stalled)
        if found.deleted:
            log.warning("dropped %d pending entries whose data was trimmed", len(found.deleted))
        if found.jobs:
            metrics.JOBS.labels(outcome="reclaimed").inc(len(found.jobs))
            log.warning("reclaimed %d jobs from dead workers", len(found.jobs))
        return found.jobs

    async def _dead_letter_stalled(self, jobs: Sequence[Job]) -> None:
        """Jobs a live worker held past the visibility timeout: whatever stalled it may stall the
        next one, so they are dead-lettered with the reason, never run again (those whose deadline
        passed are dropped)."""
        if not jobs:
            return
        now, timeout = time.time(), self.settings.visibility_timeout_s
        expired = await self.queue.skip([job for job in jobs if job.deadline <= now])
        metrics.JOBS.labels(outcome="expired").inc(expired)
        for job in jobs:
            if job.deadline > now:
                await self._dead_letter(job, (
                    f"its worker stalled on it for over the visibility timeout ({timeout:g} s) while alive; "
                    "it is not handed to another worker, which it could stall too"))

    # -------------------------------------------------------------------------- running

    async def _process(self, jobs: Sequence[Job]) -> None:
        """Run a batch and answer, retry or dead-letter every job in it."""
        now = time.time()
        for job in jobs:
            metrics.QUEUE_WAIT.observe(max(0.0, now + self._clock_offset - job.enqueued_at))
        live = [job for job in jobs if job.deadline > now]
        abandoned = await self.queue.abandoned(live)
        expired = await self.queue.skip([job for job in jobs if job.deadline <= now])
        metrics.JOBS.labels(outcome="expired").inc(expired)
        metrics.JOBS.labels(outcome="abandoned").inc(
            await self.queue.skip([job for job in live if job.job_id in abandoned]))
        live = [job for job in live if job.job_id not in abandoned]
        exhausted = [job for job in live if job.tries > self.settings.max_attempts]
        runnable = [job for job in live if job.tries <= self.settings.max_attempts]
        for job in exhausted:
            await self._dead_letter(job, "the worker running it stopped answering (crashed or hung)")
        # Jobs taken over from a dead worker run one at a time: one of them may be what killed it,
        # and it then takes down no other job (and is dead-lettered after max_attempts).
        suspect = any(job.deliveries > 1 for job in runnable)
        for group in [[job] for job in runnable] if suspect else [runnable]:
            await self._run(group)
        await self.queue.trim_acked()
        metrics.LAST_BATCH.set(time.time())
        self.batches += 1
        self.jobs += len(jobs)

    async def _run(self, jobs: Sequence[Job]) -> None:
        """Run ``jobs`` in one engine call and answer, retry or dead-letter each."""
        outcome = await self.executor.execute(jobs)
        delivered = await self._answer(outcome.answers)
        for (_, result), done in zip(outcome.answers, delivered, strict=True):
            if done:
                metrics.JOBS.labels(outcome=_outcome_of(result)).inc()
        for job, error in outcome.failures:
            await self._retry_or_dead_letter(job, error)
        if outcome.engine_jobs:
            metrics.BATCH_JOBS.observe(outcome.engine_jobs)

    async def _answer(self, answers: Sequence[tuple[Job, Result]]) -> list[bool]:
        """``Consumer.answer``, retried with backoff while Redis is unreachable or full, until the
        last of the jobs' deadlines (the answer is XACK-guarded, so a retry never answers twice)."""
        if not answers:
            return []
        last_deadline = max(job.deadline for job, _ in answers)
        backoff = Backoff(first_s=0.05, max_s=1.0)
        while True:
            try:
                return await self.queue.answer(answers)
            except (*REDIS_DOWN, ResponseError) as exc:
                if time.time() >= last_deadline or self._stopping.is_set():
                    raise
                delay = backoff.next_delay()
                log.warning("could not answer %d jobs (%s); retrying in %.2f s", len(answers), exc, delay)
                await asyncio.sleep(delay)

    async def _retry_or_dead_letter(self, job: Job, error: str) -> None:
        if job.tries >= self.settings.max_attempts:
            await self._dead_letter(job, error)
            return
        log.warning("job %s failed (try %d of %d), requeued: %s", job.job_id, job.tries,
                    self.settings.max_attempts, error)
        try:
            requeued = await self.queue.requeue(job)
        except ResponseError as exc:  # Redis refuses the job's copy (out of memory): answer it now
            await self._dead_letter(job, f"{error}; not retried: Redis refused to queue it again ({exc})")
            return
        if requeued is not None:
            metrics.JOBS.labels(outcome="retried").inc()

    async def _dead_letter(self, job: Job, error: str) -> None:
        log.error("job %s dead-lettered after %d tries: %s", job.job_id, job.tries, error)
        if await self.queue.dead_letter(job, error, self.name):
            metrics.JOBS.labels(outcome="dead_lettered").inc()

    # -------------------------------------------------------------------------- liveness

    def description(self) -> dict[str, Any]:
        """What ``insid3 queue stats`` shows about this worker."""
        return {
            "name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
            "model": self.engine.model_id, "image_size": self.engine.image_size, "model_key": self.model,
            "model_size": self.settings.model_size,
            "device": str(self.engine.device), "max_batch": self.settings.max_batch,
            "started_at": self.started_at, "batches": self.batches, "jobs": self.jobs,
        }

    async def _heartbeat(self) -> None:
        ttl_ms = round(self.settings.heartbeat_ttl_s * 1000)
        redis_now = await self.queue.announce(self.name, self.description(), ttl_ms)
        self._clock_offset = redis_now - time.time()
        metrics.LAST_HEARTBEAT.set(time.time())
        self._announced.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking up early on ``stop()``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _outcome_of(result: Result) -> str:
    ok = isinstance(result, ReferenceCreated | SegmentationResult | MatchResult)
    return "processed" if ok else "failed"
