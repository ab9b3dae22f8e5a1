"""``EmbeddedBackend``: the engine runs in the API process, behind the batching loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
from collections.abc import Sequence

from app.backends.batcher import BatchingLoop
from app.backends.store import EmbeddedReferenceStorage
from app.settings import Settings
from core.engine import Insid3
from core.errors import Insid3Error
from core.references import ReferencePolicy, UnreadableRecord
from core.requests import MatchRequest, ReferenceRequest, SegmentRequest
from core.serving import DEFAULT_TENANT, ModelUnavailable, ReferenceNotFound, ReferencePage, StoredReference, unwrap
from core.types import MatchResult, ReferenceFeatures, SegmentationResult

log = logging.getLogger("insid3.app")

_PATH = re.compile(r"(\b[a-z][a-z0-9+.-]*://\S+)|(?<![\w.~])(?:[A-Za-z]:)?(?:[/\\][^/\\\s'\"]+)+[/\\]([^/\\\s'\"]+)")


def client_safe(reason: str) -> str:
    """``reason`` with every absolute path cut to its file name (the full reason goes to the log); links stay whole."""
    return _PATH.sub(lambda found: found[1] or found[2], reason)


class EmbeddedBackend:
    """Builds the engine in the background at start-up; until it is ready (or when it cannot be
    built) every model call raises ``ModelUnavailable`` with the reason."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._problem: str | None = (
            f"the model is loading (model size {settings.model_size!r}, image size {settings.image_size})"
        )
        self._engine: Insid3 | None = None
        self._references: ReferencePolicy[ReferenceFeatures] | None = None
        self._storage: EmbeddedReferenceStorage | None = None
        self._batcher: BatchingLoop | None = None
        self._build_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._build_task = asyncio.create_task(self._build(), name="insid3-engine-build")

    async def _build(self) -> None:
        try:
            engine = await asyncio.to_thread(Insid3.build, self._settings)
            storage = await asyncio.to_thread(EmbeddedReferenceStorage, engine.cache, self._settings.reference_dir)
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
            engine.run_batch, settings.max_batch, settings.max_wait_ms / 1000.0,
            settings.max_queue, settings.retry_after_s,
        )
        self._batcher.start()
        self._engine, self._storage = engine, storage
        self._references = ReferencePolicy(storage, settings.reference_ttl_s, settings.reference_quota)
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
        return None if self._problem is None else client_safe(self._problem)

    def _ready(self) -> tuple[Insid3, ReferencePolicy[ReferenceFeatures], BatchingLoop]:
        if self._engine is None or self._references is None or self._batcher is None:
            raise ModelUnavailable(client_safe(self._problem or "the model is not loaded"))
        return self._engine, self._references, self._batcher

    async def create_reference(
        self, image: bytes, mask: bytes | None, name: str | None, ttl_s: float | None, deadline: float,
        *, owner: str = DEFAULT_TENANT,
    ) -> tuple[StoredReference, bool]:
        engine, references, batcher = self._ready()
        ttl = references.lifetime(ttl_s)
        await references.admit(owner)
        key = await asyncio.to_thread(engine.reference_key, image, mask, owner)
        existing = await references.refresh(key, ttl, name)
        if existing is not None:
            return existing, False
        [result] = await batcher.submit([ReferenceRequest(image, mask, name, ttl, key, owner)], {}, deadline)
        features = unwrap(result, ReferenceFeatures)
        return await references.keep(StoredReference.of(features, name, ttl, owner), features, ttl)

    async def get_reference(self, reference_id: str, *, scope: str = DEFAULT_TENANT) -> StoredReference:
        return await self._ready()[1].resolve(reference_id, scope)

    async def delete_reference(self, reference_id: str, *, scope: str = DEFAULT_TENANT,
                               version: str | None = None) -> None:
        await self._ready()[1].delete(reference_id, scope, version)

    async def list_references(self, offset: int, limit: int, *, scope: str = DEFAULT_TENANT) -> ReferencePage:
        return await self._ready()[1].listing(scope, offset, limit)

    async def _features(self, references: Sequence[StoredReference]) -> dict[str, ReferenceFeatures]:
        """The features of resolved references (a corrupt file on disk is dropped: storing the same
        reference again repairs it)."""
        policy = self._ready()[1]
        assert self._storage is not None
        found: dict[str, ReferenceFeatures] = {}
        for reference_id in dict.fromkeys(record.reference_id for record in references):
            try:
                features = await self._storage.features(reference_id)
            except UnreadableRecord as exc:
                raise await policy.drop_corrupt(reference_id, str(exc)) from None
            if features is None:
                raise ReferenceNotFound(reference_id)
            found[reference_id] = features
        return found

    async def segment(
        self, targets: list[bytes], references: Sequence[StoredReference], tau: float | None,
        merge_threshold: float | None, deadline: float,
    ) -> list[SegmentationResult]:
        features = await self._features(references)
        ids = [record.reference_id for record in references]
        requests = [SegmentRequest(target, ids, tau, merge_threshold) for target in targets]
        results = await self._ready()[2].submit(requests, features, deadline)
        return [unwrap(result, SegmentationResult) for result in results]

    async def match(
        self, target: bytes, reference: StoredReference, points: list[tuple[float, float]], debiased: bool,
        deadline: float,
    ) -> MatchResult:
        features = await self._features([reference])
        request = MatchRequest(target, reference.reference_id, points, debiased)
        [result] = await self._ready()[2].submit([request], features, deadline)
        return unwrap(result, MatchResult)

    async def queue_depth(self) -> int:
        return 0 if self._batcher is None else self._batcher.depth

    def liveness(self) -> None:
        return None  # the batching loop fails its jobs, never itself

    async def served_models(self) -> None:
        return None
