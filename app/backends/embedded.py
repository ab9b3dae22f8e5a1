"""``EmbeddedBackend``: the engine runs in the API process, behind the batching loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from app.backend import ModelUnavailable, ReferenceInfo, ReferencePage
from app.backends.batcher import BatchingLoop
from app.backends.store import ReferenceStore
from app.settings import Settings
from core.cache import reference_key
from core.engine import Insid3
from core.errors import Insid3Error
from core.jobs import EncodeReferenceJob, MatchJob, SegmentJob, run_batch
from core.types import MatchResult, ReferenceFeatures, SegmentationResult

log = logging.getLogger("insid3.app")
T = TypeVar("T")


def _unwrap(result: object, expected: type[T]) -> T:
    """A job's result, or its error raised."""
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, expected), f"expected {expected.__name__}, got {type(result).__name__}"
    return result


class EmbeddedBackend:
    """Builds the engine in the background at start-up; until it is ready (or when it cannot be
    built) every model call raises ``ModelUnavailable`` with the reason."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._problem: str | None = (
            f"the model is loading (model size {settings.model_size!r}, image size {settings.image_size})"
        )
        self._engine: Insid3 | None = None
        self._store: ReferenceStore | None = None
        self._batcher: BatchingLoop | None = None
        self._build_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._build_task = asyncio.create_task(self._build(), name="insid3-engine-build")

    async def _build(self) -> None:
        try:
            engine = await asyncio.to_thread(Insid3.build, **self._settings.engine_kwargs())
            store = await asyncio.to_thread(ReferenceStore, engine.cache, self._settings.reference_dir)
        except Insid3Error as exc:
            self._problem = f"the model could not be loaded: {exc.detail}"
            log.error("%s", self._problem)
            return
        except Exception as exc:  # report any failure through /readyz rather than crash
            self._problem = f"the model could not be loaded: {type(exc).__name__}: {exc}"
            log.exception("engine build failed")
            return
        gc.collect()
        gc.freeze()  # the model's long-lived objects out of the collector's way: no 100 ms+ gen-2 pauses
        settings = self._settings
        self._batcher = BatchingLoop(
            partial(run_batch, engine), settings.max_batch, settings.max_wait_ms / 1000.0,
            settings.max_queue, settings.retry_after_s,
        )
        self._batcher.start()
        self._engine, self._store = engine, store
        self._problem = None
        log.info("engine ready: %s at %d on %s", engine.model_id, engine.image_size, engine.device)

    async def close(self) -> None:
        if self._build_task is not None and not self._build_task.done():
            self._build_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._build_task
        if self._batcher is not None:
            await self._batcher.close()

    async def readiness(self) -> str | None:
        return self._problem

    def _ready(self) -> tuple[Insid3, ReferenceStore, BatchingLoop]:
        if self._engine is None or self._store is None or self._batcher is None:
            raise ModelUnavailable(self._problem or "the model is not loaded")
        return self._engine, self._store, self._batcher

    async def create_reference(
        self, image: bytes, mask: bytes | None, name: str | None, ttl_s: float | None, deadline: float
    ) -> tuple[ReferenceInfo, bool]:
        engine, store, batcher = self._ready()
        ttl = self._settings.reference_ttl_s if ttl_s is None else ttl_s
        key = reference_key(image, mask, engine.model_id, engine.image_size)
        existing = store.refresh(key, ttl)
        if existing is not None:
            return existing, False
        [result] = await batcher.submit([EncodeReferenceJob(image, mask)], deadline)
        features = _unwrap(result, ReferenceFeatures)
        existing = store.refresh(key, ttl)  # an identical request may have finished meanwhile
        if existing is not None:
            return existing, False
        height, width = features.original_size
        info = ReferenceInfo(
            reference_id=features.key, name=name, width=width, height=height, mask_area=features.mask_area,
            model=features.model_id, image_size=features.image_size, created_at=datetime.now(UTC),
            expires_at=store.expiry(ttl),
        )
        await store.put(info, features)
        return info, True

    async def get_reference(self, reference_id: str) -> ReferenceInfo:
        return self._ready()[1].info(reference_id)

    async def delete_reference(self, reference_id: str) -> None:
        self._ready()[1].delete(reference_id)

    async def list_references(self, offset: int, limit: int) -> ReferencePage:
        return self._ready()[1].page(offset, limit)

    async def _features(self, reference_ids: Sequence[str]) -> list[ReferenceFeatures]:
        engine, store, _ = self._ready()
        references = [await store.features(reference_id) for reference_id in reference_ids]
        return [engine.check_reference(reference) for reference in references]

    async def segment(
        self, targets: list[bytes], reference_ids: list[str], tau: float | None,
        merge_threshold: float | None, deadline: float,
    ) -> list[SegmentationResult]:
        references = await self._features(reference_ids)
        jobs = [SegmentJob(target, references, tau, merge_threshold) for target in targets]
        results = await self._ready()[2].submit(jobs, deadline)
        return [_unwrap(result, SegmentationResult) for result in results]

    async def match(
        self, target: bytes, reference_id: str, points: list[tuple[float, float]], debiased: bool,
        deadline: float,
    ) -> MatchResult:
        [reference] = await self._features([reference_id])
        [result] = await self._ready()[2].submit([MatchJob(target, reference, points, debiased)], deadline)
        return _unwrap(result, MatchResult)

    async def queue_depth(self) -> int:
        return 0 if self._batcher is None else self._batcher.depth
