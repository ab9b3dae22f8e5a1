"""A fake ``InferenceBackend`` for tests of the HTTP layer: no model, deterministic answers, a record
of every call."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np

from core.images import load_image
from core.serving import DEFAULT_TENANT, ModelUnavailable, QueueFull, ReferenceNotFound, ReferencePage, StoredReference
from core.types import MatchResult, SegmentationResult

FAKE_MODEL = "fake-model"
FAKE_IMAGE_SIZE = 64


def centre_box(height: int, width: int) -> np.ndarray:
    """The mask every fake segmentation answers: the middle half of the image in each direction."""
    mask = np.zeros((height, width), dtype=bool)
    mask[height // 4:height // 4 + height // 2, width // 4:width // 4 + width // 2] = True
    return mask


class FakeBackend:
    """References in a dict (id: sha256 of image and mask); ``segment`` answers ``centre_box`` of
    each target (or ``mask(height, width)``), ``match`` maps every point onto itself. ``problem``
    (not ready) and ``queue_full`` make every model call refuse; with ``hold``, ``segment`` waits
    until it is cancelled (and sets ``cancelled``). ``calls`` lists (method, args) of every model call."""

    def __init__(self, problem: str | None = None, queue_full: float | None = None, hold: bool = False,
                 references: list[StoredReference] = (),
                 mask: Callable[[int, int], np.ndarray] = centre_box) -> None:
        self.problem = problem
        self.mask = mask
        self.queue_full = queue_full
        self.hold = hold
        self.cancelled = threading.Event()
        self.calls: list[tuple[str, tuple]] = []
        self.references: dict[str, StoredReference] = {r.reference_id: r for r in references}
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def readiness(self) -> str | None:
        return self.problem

    def _record(self, method: str, *args: object) -> None:
        self.calls.append((method, args))
        if self.problem is not None:
            raise ModelUnavailable(self.problem)
        if self.queue_full is not None:
            raise QueueFull(self.queue_full)

    def _info(self, reference_id: str) -> StoredReference:
        if reference_id not in self.references:
            raise ReferenceNotFound(reference_id)
        return self.references[reference_id]

    async def create_reference(self, image: bytes, mask: bytes | None, name: str | None, ttl_s: float | None,
                               deadline: float, *, owner: str = DEFAULT_TENANT) -> tuple[StoredReference, bool]:
        self._record("create_reference", image, mask, name, ttl_s, deadline)
        reference_id = hashlib.sha256(image + b"|" + (mask or b"")).hexdigest()[:32]
        if reference_id in self.references:
            return self.references[reference_id], False
        width, height = (await asyncio.to_thread(load_image, image)).size
        info = StoredReference(reference_id, name, width, height, 0 if mask is None else 1, FAKE_MODEL,
                               FAKE_IMAGE_SIZE, datetime.now(UTC), None)
        self.references[reference_id] = info
        return info, True

    async def get_reference(self, reference_id: str, *, scope: str = DEFAULT_TENANT) -> StoredReference:
        self._record("get_reference", reference_id)
        return self._info(reference_id)

    async def delete_reference(self, reference_id: str, *, scope: str = DEFAULT_TENANT,
                               version: str | None = None) -> None:
        self._record("delete_reference", reference_id)
        self._info(reference_id)
        del self.references[reference_id]

    async def list_references(self, offset: int, limit: int, *, scope: str = DEFAULT_TENANT) -> ReferencePage:
        self._record("list_references", offset, limit)
        items = list(reversed(self.references.values()))
        return ReferencePage(items=items[offset:offset + limit], total=len(items), offset=offset, limit=limit)

    async def segment(self, targets: list[bytes], references: Sequence[StoredReference], tau: float | None,
                      merge_threshold: float | None, deadline: float) -> list[SegmentationResult]:
        self._record("segment", targets, [r.reference_id for r in references], tau, merge_threshold, deadline)
        for reference in references:
            self._info(reference.reference_id)
        if self.hold:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        results = []
        for target in targets:
            width, height = (await asyncio.to_thread(load_image, target)).size
            results.append(SegmentationResult(mask=self.mask(height, width), score=0.5, timings={"fake_ms": 1.0}))
        return results

    async def match(self, target: bytes, reference: StoredReference, points: list[tuple[float, float]],
                    debiased: bool, deadline: float) -> MatchResult:
        self._record("match", target, reference.reference_id, points, debiased, deadline)
        self._info(reference.reference_id)
        return MatchResult(points=np.asarray(points, dtype=float).reshape(-1, 2),
                           confidence=np.ones(len(points)), timings={"fake_ms": 1.0})

    async def queue_depth(self) -> int:
        return 0

    def liveness(self) -> None:
        return None

    async def served_models(self) -> None:
        return None

    def called(self, method: str) -> int:
        """How many times ``method`` was called."""
        return sum(name == method for name, _ in self.calls)
