"""The serving contract both serving modes share: what a backend does, the stored-reference
record, and the errors of the serving machinery.

Two implementations exist and the HTTP surface is identical for both: the engine in the API
process (``app.backends.embedded``) and the Redis Streams worker pool (``workers.client``).

Conventions every implementation follows:

* ``deadline`` is an absolute Unix time (``time.time()`` seconds). Work not started by then is
  dropped and the call raises ``DeadlineExceeded``; a call never waits past its deadline.
* Reference ids are content hashes (``core.cache.reference_key``): the same bytes under the same
  model for the same tenant give the same id; two tenants uploading the same bytes get two ids.
* The rules of references (ownership, visibility, quota, lifetime, corrupt records) are
  ``core.references``: a reference belongs to its ``owner`` (the tenant that stored it); a caller
  sees what its ``scope`` allows (its tenant id, or ``ANY_TENANT`` for an admin key). Another
  tenant's reference is ``ReferenceNotFound`` (never "forbidden", so ids reveal nothing).
* Engine errors are raised as the ``core.errors`` classes; serving errors are the
  ``BackendError`` subclasses below. The HTTP layer maps them to ``{"error": code, "detail": ...}``.
* When several targets are given, the first failing target's error is raised for the call.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from core.errors import Insid3Error
from core.requests import DEFAULT_TENANT

if TYPE_CHECKING:
    from core.types import MatchResult, ReferenceFeatures, SegmentationResult

T = TypeVar("T")

ANY_TENANT = "*"  # the scope of an admin key's caller: sees and deletes every tenant's references


# ------------------------------------------------------------------------------------ errors


class BackendError(Insid3Error):
    """An error of the serving machinery rather than of the caller's input."""

    code = "backend_error"


class ReferenceNotFound(BackendError):
    """No reference with that id (never created, deleted or expired). HTTP 404."""

    code = "reference_not_found"

    def __init__(self, reference_id: str) -> None:
        super().__init__(f"no reference {reference_id!r}: unknown, deleted or expired")
        self.reference_id = reference_id


class QuotaExceeded(BackendError):
    """The tenant holds its quota of references already; nothing was stored. HTTP 403."""

    code = "reference_quota_exceeded"


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


class ReferenceStorageFull(BackendError):
    """The reference budget is used up: no new reference can be stored until some expire or are
    deleted (references already stored keep working). HTTP 507."""

    code = "reference_storage_full"


class CorruptReference(BackendError):
    """A stored reference whose data cannot be read (corrupt or of another version); it is
    dropped, store it again. HTTP 410."""

    code = "reference_corrupt"


class JobFailed(BackendError):
    """A job that failed on every try, or stalled a worker, and was dead-lettered: a failure of the
    worker behind the API, not of the API itself. HTTP 502 (never retried by ``insid3.client``)."""

    code = "job_failed"


def unwrap(result: object, expected: type[T]) -> T:
    """A job's result, or its error raised."""
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, expected), f"expected {expected.__name__}, got {type(result).__name__}"
    return result


# ------------------------------------------------------------------------ stored references


def new_version() -> str:
    """A fresh record version: every store or refresh of a reference gets one (compare-and-delete)."""
    return uuid.uuid4().hex[:16]


def expiry(now: datetime, ttl_s: float) -> datetime | None:
    """When a reference created or refreshed at ``now`` with ``ttl_s`` expires (None: never, ``ttl_s`` <= 0)."""
    return None if ttl_s <= 0 else now + timedelta(seconds=ttl_s)


@dataclass(frozen=True)
class StoredReference:
    """What the service keeps about a reference besides its features (the storage record)."""

    reference_id: str
    name: str | None
    width: int
    height: int
    mask_area: int  # foreground pixels of the uploaded mask (0: match-only reference)
    model: str
    image_size: int
    created_at: datetime
    expires_at: datetime | None  # None: never
    owner: str = DEFAULT_TENANT  # the tenant that stored it
    version: str = ""  # new at every store or refresh ("": a record from before versions)

    @classmethod
    def of(cls, features: ReferenceFeatures, name: str | None, ttl_s: float, owner: str,
           now: datetime | None = None) -> StoredReference:
        """The record of freshly encoded ``features`` of ``owner``, created ``now`` with a lifetime of ``ttl_s``."""
        now = now or datetime.now(UTC)
        height, width = features.original_size
        return cls(features.key, name, width, height, features.mask_area, features.model_id,
                   features.image_size, now, expiry(now, ttl_s), owner, new_version())

    def visible_in(self, scope: str) -> bool:
        """Whether a caller of ``scope`` (a tenant id, or ``ANY_TENANT``: an admin) may see this reference."""
        return scope in (ANY_TENANT, self.owner)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))

    def extended(self, ttl_s: float, name: str | None = None, now: datetime | None = None) -> StoredReference:
        """This record refreshed: a new version, its lifetime extended to ``ttl_s`` from now (never
        shortened) and renamed to ``name`` when one is given."""
        new = expiry(now or datetime.now(UTC), ttl_s)
        longer = self.expires_at is not None and (new is None or new > self.expires_at)
        return replace(self, name=self.name if name is None else name,
                       expires_at=new if longer else self.expires_at, version=new_version())

    def to_json(self) -> str:
        fields = asdict(self)
        fields["created_at"] = self.created_at.isoformat()
        fields["expires_at"] = None if self.expires_at is None else self.expires_at.isoformat()
        return json.dumps(fields)

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredReference:
        """Inverse of ``to_json``; ``ValueError`` (or ``KeyError``/``TypeError``) for anything else."""
        fields = json.loads(raw)
        fields["created_at"] = datetime.fromisoformat(fields["created_at"])
        if fields["expires_at"] is not None:
            fields["expires_at"] = datetime.fromisoformat(fields["expires_at"])
        return cls(**fields)


@dataclass(frozen=True)
class ReferencePage:
    """One page of ``list_references``, newest first."""

    items: list[StoredReference]
    total: int
    offset: int
    limit: int
    unreadable: tuple[str, ...] = ()  # ids of records in the page that could not be read (storage only)


# --------------------------------------------------------------------------------- backends


@runtime_checkable
class InferenceBackend(Protocol):
    """Everything the HTTP routes need from an engine runner. All methods are coroutines."""

    async def start(self) -> None:
        """Begin loading/connecting in the background; return quickly, never raise for a missing
        model (``readiness`` reports it instead)."""

    async def close(self) -> None:
        """Stop accepting work, answer (or fail) every accepted job, release resources."""

    async def readiness(self) -> str | None:
        """None when requests can be served, else a human reason (what is missing and how to fix it)."""

    async def create_reference(
        self, image: bytes, mask: bytes | None, name: str | None, ttl_s: float | None, deadline: float,
        *, owner: str = DEFAULT_TENANT,
    ) -> tuple[StoredReference, bool]:
        """Encode and store a reference of ``owner`` (a tenant id, never ``ANY_TENANT``); returns its
        record and True when it was newly created (False: the owner's identical reference existed;
        it is refreshed as ``core.references`` says). ``mask=None`` makes a match-only reference;
        ``ttl_s=None`` uses the configured default, ``ttl_s=0`` never expires."""

    async def get_reference(self, reference_id: str, *, scope: str = DEFAULT_TENANT) -> StoredReference:
        """The record of a live reference visible in ``scope``, read once: the request then hands it
        to ``segment``/``match``."""

    async def delete_reference(self, reference_id: str, *, scope: str = DEFAULT_TENANT,
                               version: str | None = None) -> None:
        """Forget a reference visible in ``scope``; with ``version``, only while its record still
        has that version (a reference stored again or refreshed meanwhile is left alone)."""

    async def list_references(self, offset: int, limit: int, *, scope: str = DEFAULT_TENANT) -> ReferencePage:
        """The live references visible in ``scope``, newest first."""

    async def segment(
        self, targets: list[bytes], references: Sequence[StoredReference], tau: float | None,
        merge_threshold: float | None, deadline: float,
    ) -> list[SegmentationResult]:
        """Segment every target with the k references (k-shot), as resolved by ``get_reference``
        or created; one result per target, in order."""

    async def match(
        self, target: bytes, reference: StoredReference, points: list[tuple[float, float]], debiased: bool,
        deadline: float,
    ) -> MatchResult:
        """Map ``points`` ((x, y) in reference pixels) to the target, with a confidence each."""

    async def queue_depth(self) -> int:
        """Jobs waiting to run (embedded queue length, or the Redis stream backlog)."""

    def liveness(self) -> str | None:
        """None while the process's background loops run, else why it should be restarted."""

    async def served_models(self) -> Collection[str] | None:
        """The model keys a worker pool serves (None: the engine runs in this process)."""
