"""One batch of queued jobs through the engine: references resolved (worker LRU, then Redis),
one ``core.jobs.run_batch`` call, new references stored in Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.backend import ReferenceInfo, ReferenceNotFound
from core.engine import Insid3
from core.errors import Insid3Error
from core.jobs import EncodeReferenceJob, MatchJob, Outcome, SegmentJob, run_batch
from core.jobs import Job as EngineJob
from core.types import ReferenceFeatures
from workers.protocol import (
    Job,
    ProtocolError,
    ReferenceCreated,
    ReferenceRequest,
    Request,
    Result,
    SegmentRequest,
    error_of,
)
from workers.references import ReferenceStore, expires_at

log = logging.getLogger("insid3.worker")


@dataclass
class BatchOutcome:
    """What became of a batch: answers to send, and jobs that failed unexpectedly (to retry)."""

    answers: list[tuple[Job, Result]] = field(default_factory=list)
    failures: list[tuple[Job, str]] = field(default_factory=list)
    engine_jobs: int = 0  # jobs that went through run_batch


class Executor:
    """Runs batches of queued jobs on one engine."""

    def __init__(self, engine: Insid3, store: ReferenceStore) -> None:
        self.engine = engine
        self.store = store

    async def execute(self, jobs: Sequence[Job]) -> BatchOutcome:
        """Answer or fail every job; the ones needing the engine share one ``run_batch`` call."""
        outcome = BatchOutcome()
        decoded: list[tuple[Job, Request]] = []
        for job in jobs:
            try:
                decoded.append((job, job.request()))
            except ProtocolError as exc:
                outcome.failures.append((job, str(exc)))
        references = await self._references(
            {r for _, request in decoded for r in _reference_ids(request)})
        runnable: list[tuple[Job, Request, EngineJob]] = []
        for job, request in decoded:
            try:
                engine_job = await self._engine_job(request, references)
            except Insid3Error as exc:
                outcome.answers.append((job, error_of(exc)))
                continue
            if isinstance(engine_job, ReferenceCreated):
                outcome.answers.append((job, engine_job))
            else:
                runnable.append((job, request, engine_job))
        outcome.engine_jobs = len(runnable)
        results = await self._run([engine_job for _, _, engine_job in runnable])
        for (job, request, _), result in zip(runnable, results, strict=True):
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

    async def _engine_job(self, request: Request, references: dict[str, ReferenceFeatures | Insid3Error]
                          ) -> EngineJob | ReferenceCreated:
        """The engine's job for ``request``, or the answer when an identical reference exists."""
        if isinstance(request, ReferenceRequest):
            existing = await self.store.extend(self.engine.reference_key(request.image, request.mask),
                                               request.ttl_s)
            if existing is not None:
                return ReferenceCreated(existing.model_dump(mode="json"), False)
            return EncodeReferenceJob(request.image, request.mask)
        found = [references[r] for r in _reference_ids(request)]
        for item in found:
            if isinstance(item, Insid3Error):
                raise item
        features = [item for item in found if isinstance(item, ReferenceFeatures)]
        if isinstance(request, SegmentRequest):
            return SegmentJob(request.target, features, request.tau, request.merge_threshold)
        return MatchJob(request.target, features[0], request.points, request.debiased)

    async def _references(self, reference_ids: set[str]) -> dict[str, ReferenceFeatures | Insid3Error]:
        """Features on the engine's device from the LRU, else from Redis (then cached)."""
        found: dict[str, ReferenceFeatures | Insid3Error] = {}
        for reference_id in reference_ids:
            cached = self.engine.cache.get(reference_id)
            if cached is not None:
                found[reference_id] = cached
        missing = sorted(reference_ids - found.keys())
        blobs = await self.store.features(missing)
        for reference_id in missing:
            if reference_id not in blobs:
                found[reference_id] = ReferenceNotFound(reference_id)
                continue
            try:
                features = self.engine.check_reference(ReferenceFeatures.from_bytes(blobs[reference_id]))
            except Insid3Error as exc:
                found[reference_id] = exc
                continue
            self.engine.cache.put(features)
            found[reference_id] = features
        return found

    async def _run(self, jobs: list[EngineJob]) -> list[Outcome | Exception]:
        """``run_batch`` in a thread; when it raises, each job alone so one bad job fails alone."""
        if not jobs:
            return []
        try:
            return list(await asyncio.to_thread(run_batch, self.engine, jobs))
        except Exception as exc:
            if len(jobs) == 1:
                return [exc]
            log.warning("batch of %d failed (%s: %s); running its jobs one by one",
                        len(jobs), type(exc).__name__, exc)
        return [(await self._run([job]))[0] for job in jobs]

    async def _store_reference(self, request: ReferenceRequest, features: ReferenceFeatures) -> ReferenceCreated:
        """Save new reference features to Redis (fp16, with the request's TTL)."""
        now = datetime.now(UTC)
        height, width = features.original_size
        info = ReferenceInfo(
            reference_id=features.key, name=request.name, width=width, height=height,
            mask_area=features.mask_area, model=features.model_id, image_size=features.image_size,
            created_at=now, expires_at=expires_at(now, request.ttl_s),
        )
        existing = await self.store.save(info, await asyncio.to_thread(features.to_bytes, "fp16"), request.ttl_s)
        if existing is None:
            return ReferenceCreated(info.model_dump(mode="json"), True)
        extended = await self.store.extend(info.reference_id, request.ttl_s)  # created meanwhile elsewhere
        return ReferenceCreated((extended or existing).model_dump(mode="json"), False)


def _reference_ids(request: Request) -> list[str]:
    if isinstance(request, SegmentRequest):
        return request.reference_ids
    return [] if isinstance(request, ReferenceRequest) else [request.reference_id]
