"""The reference policy: the one set of rules both serving modes apply to stored references.

``ReferencePolicy`` decides; the stores below it only keep bytes and records (``ReferenceStorage``:
``app.backends.store.EmbeddedReferenceStorage`` in the API process,
``workers.references.RedisReferenceStorage`` in Redis). The rules:

* **Ownership and visibility.** A reference belongs to its ``owner``, the tenant that stored it
  (the owner is part of its content hash, so two tenants' identical uploads are two references).
  A caller sees what its ``scope`` allows: its own tenant id, or ``ANY_TENANT`` (an admin key).
  A reference outside the scope is ``ReferenceNotFound``, as if it did not exist.
* **Quota.** An owner holding ``quota`` live references can neither create nor refresh one
  (``QuotaExceeded``, checked when the request arrives; 0: no limit).
* **Lifetime.** A reference lives ``ttl_s`` (``None``: the configured default, 0: forever).
  Storing an existing reference again refreshes it: its lifetime is extended, never shortened, a
  name given renames it, and its record gets a new ``version``. When two requests store the same
  reference at once, the first writer creates it and the other refreshes it.
* **Failed requests.** The inline references a failed request created are deleted only while
  their record still has the version that request wrote (compare-and-delete): a reference someone
  stored again or refreshed meanwhile stays.
* **Corrupt records.** A record or features that cannot be read are dropped (and logged); the
  request gets ``CorruptReference`` (410), a listing leaves them out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from core.serving import (
    CorruptReference,
    ModelUnavailable,
    QuotaExceeded,
    ReferenceNotFound,
    ReferencePage,
    StoredReference,
)

log = logging.getLogger("insid3.references")

F = TypeVar("F")
REFRESH_TRIES = 8  # compare-and-set rounds of a refresh racing other refreshes


class UnreadableRecord(Exception):
    """Storage found a reference's record or features but could not read them."""


class ReferenceStorage(Protocol[F]):
    """Where references are kept: records and features, no rules. ``F`` is what the features are
    stored as. Every method takes the reference id first."""

    async def read(self, reference_id: str) -> StoredReference | None:
        """The stored record (None: none); ``UnreadableRecord`` when it cannot be read."""

    async def save(self, record: StoredReference, features: F) -> StoredReference | None:
        """Store a new reference; when one with this id exists, nothing is written and its record
        is returned instead."""

    async def replace(self, record: StoredReference, version: str) -> bool:
        """Write ``record`` over the stored one while that one still has ``version``."""

    async def delete(self, reference_id: str, version: str | None = None) -> bool:
        """Remove a reference (with ``version``: only while its record has it); False when nothing was removed."""

    async def count(self, owner: str) -> int:
        """How many live references ``owner`` holds."""

    async def page(self, scope: str, offset: int, limit: int) -> ReferencePage:
        """The live references visible in ``scope``, newest first; unreadable ones listed apart."""


@dataclass(frozen=True)
class ReferencePolicy(Generic[F]):
    """The rules of the module docstring over one ``storage``."""

    storage: ReferenceStorage[F]
    default_ttl_s: float = 86_400.0
    quota: int = 0  # live references per owner (0: no limit)

    def lifetime(self, ttl_s: float | None) -> float:
        """The lifetime of a reference stored with ``ttl_s`` (None: the default)."""
        return self.default_ttl_s if ttl_s is None else ttl_s

    async def admit(self, owner: str) -> None:
        """``QuotaExceeded`` when ``owner`` may not create or refresh a reference now."""
        if self.quota and (held := await self.storage.count(owner)) >= self.quota:
            raise QuotaExceeded(f"you hold {held} references, your quota is {self.quota} "
                                "(INSID3_REFERENCE_QUOTA); delete some before creating new ones")

    async def resolve(self, reference_id: str, scope: str) -> StoredReference:
        """The record of a live reference visible in ``scope``: one read of its storage."""
        try:
            record = await self.storage.read(reference_id)
        except UnreadableRecord as exc:
            raise await self.drop_corrupt(reference_id, str(exc)) from None
        if record is None or not record.visible_in(scope):
            raise ReferenceNotFound(reference_id)
        return record

    async def listing(self, scope: str, offset: int, limit: int) -> ReferencePage:
        """The live references visible in ``scope``, newest first; unreadable ones are dropped."""
        page = await self.storage.page(scope, offset, limit)
        for reference_id in page.unreadable:
            await self.drop_corrupt(reference_id, "its record is unreadable")
        return replace(page, total=page.total - len(page.unreadable), unreadable=())

    async def delete(self, reference_id: str, scope: str, version: str | None = None) -> None:
        """Forget a reference visible in ``scope``; with ``version``, only while its record has it
        (else it is left alone, and that is no error)."""
        await self.resolve(reference_id, scope)
        if await self.storage.delete(reference_id, version):
            return
        if version is None:
            raise ReferenceNotFound(reference_id)
        log.info("left reference %s alone: it was stored again or refreshed since version %s", reference_id, version)

    async def refresh(self, reference_id: str, ttl_s: float, name: str | None) -> StoredReference | None:
        """The stored reference ``reference_id`` refreshed (lifetime extended, never shortened;
        renamed to ``name`` when given; a new version); None when there is none."""
        for _ in range(REFRESH_TRIES):
            try:
                record = await self.storage.read(reference_id)
            except UnreadableRecord as exc:
                await self.drop_corrupt(reference_id, str(exc))
                return None
            if record is None:
                return None
            refreshed = record.extended(ttl_s, name)
            if await self.storage.replace(refreshed, record.version):
                return refreshed
        raise ModelUnavailable(f"reference {reference_id} is being refreshed by many requests at once; retry")

    async def keep(self, record: StoredReference, features: F, ttl_s: float) -> tuple[StoredReference, bool]:
        """Store freshly encoded ``features`` under ``record``: (record, True), or when another
        request stored the same reference meanwhile, (that one refreshed, False)."""
        existing = await self.storage.save(record, features)
        if existing is None:
            return record, True
        return await self.refresh(record.reference_id, ttl_s, record.name) or existing, False

    async def drop_corrupt(self, reference_id: str, reason: str) -> CorruptReference:
        """Drop a reference whose stored data cannot be read; the error to answer with."""
        log.error("reference %s is corrupt in storage and is dropped: %s", reference_id, reason)
        await self.storage.delete(reference_id)
        return CorruptReference(f"reference {reference_id!r} was corrupt in storage and has been dropped; "
                                "store it again")
