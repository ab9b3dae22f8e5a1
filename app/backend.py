"""The contract between the HTTP layer and whatever runs the engine.

Two implementations exist and the HTTP surface is identical for both:

* ``app.backends.embedded.EmbeddedBackend``: the engine in the API process, fed by an asyncio
  batching loop, with an in-memory (optionally on-disk) reference store with TTL;
* ``workers.client.RedisBackend``: jobs go to the Redis Streams worker pool.

Conventions every implementation follows:

* ``deadline`` is an absolute Unix time (``time.time()`` seconds). Work not started by then is
  dropped and the call raises ``DeadlineExceeded``; a call never waits past its deadline.
* Reference ids are content hashes (``core.cache.reference_key(image, mask, model_id, image_size)``,
  the ``key`` of the engine's ``ReferenceFeatures``): the same bytes under the same model give the
  same id.
* Engine errors are raised as the ``core.errors`` classes (``InvalidImageError``,
  ``ImageTooLargeError``, ``EmptyMaskError``, ``MaskShapeError``, ``IncompatibleReferenceError``,
  ...); backend errors are the ``BackendError`` subclasses below. The HTTP layer maps them all to
  ``{"error": code, "detail": ...}`` responses, anything else is a bug (500).
* When several targets are given, the first failing target's error is raised for the call.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from core.errors import Insid3Error

if TYPE_CHECKING:
    from core.types import MatchResult, SegmentationResult


class BackendError(Insid3Error):
    """An error of the serving machinery rather than of the caller's input."""

    code = "backend_error"


class ReferenceNotFound(BackendError):
    """No reference with that id (never created, deleted or expired). HTTP 404."""

    code = "reference_not_found"

    def __init__(self, reference_id: str) -> None:
        super().__init__(f"no reference {reference_id!r}: unknown, deleted or expired")
        self.reference_id = reference_id


class QueueFull(BackendError):
    """Too much work queued already; retry after ``retry_after_s`` seconds. HTTP 503."""

    code = "queue_full"

    def __init__(self, retry_after_s: float, detail: str | None = None) -> None:
        super().__init__(detail or f"the job queue is full; retry in {retry_after_s:g} s")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(BackendError):
    """The request's deadline passed before its job finished; the job is dropped. HTTP 504."""

    code = "deadline_exceeded"


class ModelUnavailable(BackendError):
    """The engine cannot serve (weights missing, still loading, Redis down...). HTTP 503."""

    code = "model_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReferenceInfo(BaseModel):
    """What the service knows about a stored reference (never the features themselves)."""

    reference_id: str = Field(description="Content hash of the image, mask and engine configuration.")
    name: str | None = Field(default=None, description="Free-form label given at creation.")
    width: int = Field(description="Width of the reference image in pixels.")
    height: int = Field(description="Height of the reference image in pixels.")
    mask_area: int = Field(description="Foreground pixels of the mask as uploaded (0: match-only reference).")
    model: str = Field(description="The engine's model id, e.g. dinov3_vitl16-0123456789ab.")
    image_size: int = Field(description="Side of the square the engine resizes images to.")
    created_at: datetime
    expires_at: datetime | None = Field(default=None, description="None: never expires.")


class ReferencePage(BaseModel):
    """One page of ``list_references``, newest first."""

    items: list[ReferenceInfo]
    total: int
    offset: int
    limit: int


@runtime_checkable
class InferenceBackend(Protocol):
    """Everything the routes need from an engine runner. All methods are coroutines."""

    async def start(self) -> None:
        """Begin loading/connecting in the background; must return quickly and never raise
        for a missing model (``readiness`` reports it instead)."""

    async def close(self) -> None:
        """Stop accepting work, answer (or fail) every accepted job, release resources."""

    async def readiness(self) -> str | None:
        """None when requests can be served, else a human reason (what is missing and how to fix it)."""

    async def create_reference(
        self, image: bytes, mask: bytes | None, name: str | None, ttl_s: float | None, deadline: float
    ) -> tuple[ReferenceInfo, bool]:
        """Encode and store a reference; returns its info and True when it was newly created
        (False: an identical reference existed, its expiry is extended to the new ``ttl_s``).
        ``mask=None`` makes a match-only reference. ``ttl_s=None`` uses the configured default,
        ``ttl_s=0`` never expires."""

    async def get_reference(self, reference_id: str) -> ReferenceInfo:
        """The info of a live reference, else ``ReferenceNotFound``."""

    async def delete_reference(self, reference_id: str) -> None:
        """Forget a reference, else ``ReferenceNotFound``."""

    async def list_references(self, offset: int, limit: int) -> ReferencePage:
        """Live references, newest first."""

    async def segment(
        self,
        targets: list[bytes],
        reference_ids: list[str],
        tau: float | None,
        merge_threshold: float | None,
        deadline: float,
    ) -> list[SegmentationResult]:
        """Segment every target with the k references (k-shot); one result per target, in order.
        Raises ``ReferenceNotFound`` for an unknown id and ``IncompatibleReferenceError`` for
        features of another model or image size."""

    async def match(
        self,
        target: bytes,
        reference_id: str,
        points: list[tuple[float, float]],
        debiased: bool,
        deadline: float,
    ) -> MatchResult:
        """Map ``points`` ((x, y) in reference pixels) to the target, with a confidence each."""

    async def queue_depth(self) -> int:
        """Jobs waiting to run (embedded queue length, or the Redis stream backlog)."""
