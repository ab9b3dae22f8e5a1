"""The worker loop: read jobs from the stream in batches, run them, answer each exactly once.

* Batching: after the first job arrives the worker waits at most ``max_wait_ms`` for up to
  ``max_batch`` jobs, then runs them in one ``Insid3.run_batch`` call.
* At-least-once: jobs left pending by a dead worker are reclaimed (XAUTOCLAIM) once idle for
  ``visibility_timeout_s``; a job tried ``max_attempts`` times is dead-lettered.
* Deadlines: expired jobs are acknowledged unrun (their API process has answered 504). Deadlines
  are Unix times of the API host's clock: keep the hosts' clocks synchronised (NTP).
* ``stop()`` (SIGTERM) drains: the current batch finishes and is answered, then the loop exits.
* Redis outages: every Redis error is followed by a backoff and a retry; a lost consumer group
  is recreated.
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
from workers.connection import REDIS_DOWN, Backoff, is_nogroup
from workers.consumer import Consumer
from workers.execution import Executor
from workers.jobs import Job
from workers.references import ReferenceStore
from workers.settings import WorkerSettings

log = logging.getLogger("insid3.worker")

READ_BLOCK_MS = 1000  # how long one idle read blocks (bounds how fast an idle worker notices stop())
WINDOW_POLL_S = 0.001  # poll period while a batch fills up


class Worker:
    """One consumer of the job stream, running one engine."""

    def __init__(self, settings: WorkerSettings, engine: Insid3, client: aioredis.Redis) -> None:
        self.settings = settings
        self.engine = engine
        self.queue = Consumer(client)
        self.executor = Executor(engine, ReferenceStore(client, self.queue.keys))
        self.name = settings.name
        self.started_at = time.time()
        self.batches = 0
        self.jobs = 0
        self._stopping = asyncio.Event()
        self._clock_offset = 0.0  # Redis clock minus ours
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
        heartbeat = asyncio.create_task(self._heartbeat(), name="insid3-worker-heartbeat")
        backoff = Backoff()
        try:
            while not self._stopping.is_set():
                try:
                    jobs = await self._next_batch()
                    if jobs:
                        await self._process(jobs)
                    backoff.reset()
                except REDIS_DOWN as exc:
                    delay = backoff.next_delay()
                    log.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                    await self._sleep(delay)
                except ResponseError as exc:
                    if not is_nogroup(exc):
                        raise
                    log.warning("the consumer group vanished (Redis restarted?); recreating it")
                    await self.queue.ensure_group()
        finally:
            self._stopping.set()
            await heartbeat
            with contextlib.suppress(*REDIS_DOWN, ResponseError):
                await self.queue.retire(self.name)
        log.info("worker %s stopped after %d batches, %d jobs", self.name, self.batches, self.jobs)

    # -------------------------------------------------------------------------- reading

    async def _next_batch(self) -> list[Job]:
        """Reclaimed jobs when some are due, else new jobs gathered for at most ``max_wait_ms``."""
        batch = self.settings.max_batch
        if time.monotonic() >= self._next_reclaim:
            reclaimed = await self.queue.reclaim(self.name, self.visibility_ms, batch)
            full = len(reclaimed.jobs) + len(reclaimed.malformed) == batch
            self._next_reclaim = time.monotonic() + (0 if full else self._reclaim_interval())
            if reclaimed.deleted:
                log.warning("dropped %d pending entries whose data was trimmed", len(reclaimed.deleted))
            if reclaimed.jobs:
                metrics.JOBS.labels(outcome="reclaimed").inc(len(reclaimed.jobs))
                log.warning("reclaimed %d jobs from stalled workers", len(reclaimed.jobs))
                return reclaimed.jobs
            await self.queue.prune_consumers(self.visibility_ms)
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

    def _reclaim_interval(self) -> float:
        return min(max(self.settings.visibility_timeout_s / 2, 0.5), 30.0)

    # -------------------------------------------------------------------------- running

    async def _process(self, jobs: Sequence[Job]) -> None:
        """Run a batch and answer, retry or dead-letter every job in it."""
        now = time.time()
        for job in jobs:
            metrics.QUEUE_WAIT.observe(max(0.0, now + self._clock_offset - job.enqueued_at))
        expired = [job for job in jobs if job.deadline <= now]
        exhausted = [job for job in jobs if job.deadline > now and job.tries > self.settings.max_attempts]
        runnable = [job for job in jobs if job.deadline > now and job.tries <= self.settings.max_attempts]
        if expired:
            await self.queue.skip(expired)
            metrics.JOBS.labels(outcome="expired").inc(len(expired))
        for job in exhausted:
            await self._dead_letter(job, "the worker running it stopped answering (crashed or hung)")
        outcome = await self.executor.execute(runnable)
        delivered = await self.queue.answer(outcome.answers)
        for (_, result), done in zip(outcome.answers, delivered, strict=True):
            if done:
                metrics.JOBS.labels(outcome=_outcome_of(result)).inc()
        for job, error in outcome.failures:
            await self._retry_or_dead_letter(job, error)
        await self.queue.trim_acked()
        if outcome.engine_jobs:
            metrics.BATCH_JOBS.observe(outcome.engine_jobs)
        metrics.LAST_BATCH.set(time.time())
        self.batches += 1
        self.jobs += len(jobs)

    async def _retry_or_dead_letter(self, job: Job, error: str) -> None:
        if job.tries >= self.settings.max_attempts:
            await self._dead_letter(job, error)
            return
        log.warning("job %s failed (try %d of %d), requeued: %s", job.job_id, job.tries,
                    self.settings.max_attempts, error)
        if await self.queue.requeue(job) is not None:
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
            "model": self.engine.model_id, "image_size": self.engine.image_size,
            "device": str(self.engine.device), "max_batch": self.settings.max_batch,
            "started_at": self.started_at, "batches": self.batches, "jobs": self.jobs,
        }

    async def _heartbeat(self) -> None:
        ttl_ms = round(self.settings.heartbeat_s * 3000)
        while not self._stopping.is_set():
            try:
                redis_now = await self.queue.announce(self.name, self.description(), ttl_ms)
                self._clock_offset = redis_now - time.time()
            except REDIS_DOWN as exc:
                log.debug("heartbeat failed: %s", exc)
            await self._sleep(self.settings.heartbeat_s)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking up early on ``stop()``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _outcome_of(result: Result) -> str:
    ok = isinstance(result, ReferenceCreated | SegmentationResult | MatchResult)
    return "processed" if ok else "failed"
