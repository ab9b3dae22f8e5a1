"""One batch of queued jobs through the engine: references resolved (worker LRU, then Redis),
one ``Insid3.run_batch`` call, new references stored in Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from redis.exceptions import ResponseError

from core.engine import Insid3
from core.errors import Insid3Error
from core.references import ReferencePolicy
from core.requests import ReferenceRequest, Request, reference_ids
from core.serving import JobFailed, ModelUnavailable, ReferenceNotFound, StoredReference
from core.types import ReferenceFeatures
from workers.codec import ProtocolError, ReferenceCreated, RemoteError, Result, error_of
from workers.jobs import Job
from workers.references import RedisReferenceStorage

log = logging.getLogger("insid3.worker")


@dataclass
class BatchOutcome:
    """What became of a batch: answers to send (results, and errors that a retry would repeat),
    and jobs that failed unexpectedly (to retry)."""

    answers: list[tuple[Job, Result]] = field(default_factory=list)
    failures: list[tuple[Job, str]] = field(default_factory=list)
    engine_jobs: int = 0  # jobs that went through run_batch


class Executor:
    """Runs batches of queued jobs on one engine."""

    def __init__(self, engine: Insid3, storage: RedisReferenceStorage) -> None:
        self.engine = engine
        self.storage = storage
        self.references = ReferencePolicy(storage)  # lifetimes come with each request

    async def execute(self, jobs: Sequence[Job]) -> BatchOutcome:
        """Answer or fail every job; the ones needing the engine share one ``run_batch`` call."""
        outcome = BatchOutcome()
        decoded: list[tuple[Job, Request]] = []
        for job in jobs:
            try:
                decoded.append((job, job.request()))
            except ProtocolError as exc:  # deterministic: a retry would fail the same way
                log.error("job %s has a corrupt body: %s", job.job_id, exc)
                outcome.answers.append((job, RemoteError(JobFailed.code, f"corrupt job: {exc}")))
        references = await self._references({r for _, request in decoded for r in reference_ids(request)})
        runnable: list[tuple[Job, Request]] = []
        for job, request in decoded:
            try:
                ready = await self._ready(request, references)
            except Insid3Error as exc:
                outcome.answers.append((job, error_of(exc)))
                continue
            except ResponseError as exc:  # Redis refuses writes: out of memory, read-only replica
                outcome.answers.append((job, error_of(ModelUnavailable(f"Redis cannot look the reference up: {exc}"))))
                continue
            if isinstance(ready, ReferenceCreated):
                outcome.answers.append((job, ready))
            else:
                runnable.append((job, ready))
        outcome.engine_jobs = len(runnable)
        found = {r: f for r, f in references.items() if isinstance(f, ReferenceFeatures)}
        results = await self._run([request for _, request in runnable], found)
        for (job, request), result in zip(runnable, results, strict=True):
            if isinstance(result, Insid3Error):
                outcome.answers.append((job, error_of(result)))
            elif isinstance(result, Exception):
                outcome.failures.append((job, f"{type(result).__name__}: {result}"))
            elif isinstance(result, ReferenceFeatures):
                assert isinstance(request, ReferenceRequest)
                outcome.answers.append((job, await self._store_reference(request, result)))
            else:
                outcome.answers.append((job, result))
        return outcome

    async def _ready(self, request: Request, references: dict[str, ReferenceFeatures | Insid3Error]
                     ) -> Request | ReferenceCreated:
        """``request`` ready for the engine, or the answer when an identical reference exists."""
        if isinstance(request, ReferenceRequest):
            key = await asyncio.to_thread(self.engine.reference_key, request.image, request.mask, request.owner)
            existing = await self.references.refresh(key, request.ttl_s, request.name)
            if existing is not None:
                return ReferenceCreated(existing, False)
            return replace(request, key=key)
        for reference_id in reference_ids(request):
            found = references[reference_id]
            if isinstance(found, Insid3Error):
                raise found
        return request

    async def _references(self, wanted: set[str]) -> dict[str, ReferenceFeatures | Insid3Error]:
        """Features on the engine's device from the LRU, else from Redis (then cached)."""
        found: dict[str, ReferenceFeatures | Insid3Error] = {}
        for reference_id in wanted:
            cached = self.engine.cache.get(reference_id)
            if cached is not None:
                found[reference_id] = cached
        missing = sorted(wanted - found.keys())
        blobs = await self.storage.features(missing)
        for reference_id in missing:
            if reference_id not in blobs:
                found[reference_id] = ReferenceNotFound(reference_id)
                continue
            try:
                features = await asyncio.to_thread(self.engine.load_reference, blobs[reference_id])
            except Insid3Error as exc:
                found[reference_id] = exc
                continue
            except Exception as exc:  # anything from garbage bytes: the reference is corrupt, drop it
                reason = f"its features do not load ({type(exc).__name__}: {exc})"
                found[reference_id] = await self.references.drop_corrupt(reference_id, reason)
                continue
            self.engine.cache.put(features)
            found[reference_id] = features
        return found

    async def _run(self, requests: list[Request], references: dict[str, ReferenceFeatures]
                   ) -> list[object]:
        """``run_batch`` in a thread (it isolates each request's failure)."""
        if not requests:
            return []
        try:
            return list(await asyncio.to_thread(self.engine.run_batch, requests, references))
        except Exception as exc:  # run_batch itself broke: every job is retried
            log.exception("run_batch failed for a batch of %d", len(requests))
            return [exc] * len(requests)

    async def _store_reference(self, request: ReferenceRequest, features: ReferenceFeatures) -> Result:
        """Save new reference features to Redis (fp16 raw features: the debiased map is recomputed
        on load; with the request's lifetime), or the error that prevented it."""
        record = StoredReference.of(features, request.name, request.ttl_s, request.owner)
        payload = await asyncio.to_thread(features.to_bytes, "fp16", False)
        try:
            return ReferenceCreated(*await self.references.keep(record, payload, request.ttl_s))
        except Insid3Error as exc:  # the reference budget is full
            return error_of(exc)
        except ResponseError as exc:  # Redis refuses writes: out of memory, read-only replica
            return error_of(ModelUnavailable(f"Redis cannot store the reference: {exc}"))
