"""References in Redis: fp16 features and their ``core.serving.StoredReference`` record, with a
lifetime, shared by every API process and worker, listed per tenant (its ``owner``) and for all.
Keys come from ``workers.keys``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis

from core.serving import ANY_TENANT, DEFAULT_TENANT, ReferencePage, StoredReference, expiry
from workers import scripts
from workers.keys import Keys

NEVER = "+inf"


def _lifetime(now: datetime, ttl_s: float) -> tuple[datetime | None, int, str]:
    """(expires_at, ttl in ms, expiry score) of a reference created or refreshed at ``now``."""
    expires = expiry(now, ttl_s)
    if expires is None:
        return None, 0, NEVER
    return expires, max(1, round(ttl_s * 1000)), repr(expires.timestamp())


class ReferenceStore:
    """Reads and writes references in Redis (``decode_responses=False`` client)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._save = client.register_script(scripts.SAVE_REFERENCE)
        self._extend = client.register_script(scripts.EXTEND_REFERENCE)
        self._prune = client.register_script(scripts.PRUNE_REFERENCES)

    async def save(self, record: StoredReference, features: bytes, ttl_s: float) -> StoredReference | None:
        """Store a new reference; when one with this id exists, nothing is written and its record
        is returned instead."""
        _, ttl_ms, score = _lifetime(record.created_at, ttl_s)
        existing = await self._save(
            keys=[self.keys.reference(record.reference_id), *self._listing(ANY_TENANT),
                  *self._listing(record.owner)],
            args=[record.reference_id, features, record.to_json(), ttl_ms,
                  repr(record.created_at.timestamp()), score],
        )
        return None if existing is None else StoredReference.from_json(existing)

    def _listing(self, tenant: str) -> tuple[str, str]:
        """The (by created, by expiry) sorted sets listing ``tenant``'s references (all: ``ANY_TENANT``)."""
        if tenant == ANY_TENANT:
            return self.keys.references, self.keys.references_expiry
        return self.keys.tenant_references(tenant), self.keys.tenant_references_expiry(tenant)

    async def extend(self, reference_id: str, ttl_s: float, name: str | None = None,
                     tenant: str = DEFAULT_TENANT) -> StoredReference | None:
        """Extend an existing reference of ``tenant`` to ``ttl_s`` from now (0: forever), never
        shortening it, and rename it to ``name`` when given; None when there is no such reference."""
        expires, ttl_ms, score = _lifetime(datetime.now(UTC), ttl_s)
        raw = await self._extend(
            keys=[self.keys.reference(reference_id), self.keys.references_expiry,
                  self._listing(tenant)[1]],
            args=[reference_id, ttl_ms, "" if expires is None else expires.isoformat(), score, name or ""],
        )
        return None if raw is None else StoredReference.from_json(raw)

    async def record(self, reference_id: str) -> StoredReference | None:
        """The record of a live reference."""
        raw = await self.client.hget(self.keys.reference(reference_id), "info")
        return None if raw is None else StoredReference.from_json(raw)

    async def features(self, reference_ids: Sequence[str]) -> dict[str, bytes]:
        """The serialised features of the live references among ``reference_ids``."""
        pipe = self.client.pipeline(transaction=False)
        for reference_id in reference_ids:
            pipe.hget(self.keys.reference(reference_id), "features")
        found = await pipe.execute() if reference_ids else []
        return {r: f for r, f in zip(reference_ids, found, strict=True) if f is not None}

    async def delete(self, reference_id: str) -> bool:
        """Forget a reference; False when there was none."""
        record = await self.record(reference_id)
        owner = DEFAULT_TENANT if record is None else record.owner
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.reference(reference_id))
        for listing in (*self._listing(ANY_TENANT), *self._listing(owner)):
            pipe.zrem(listing, reference_id)
        deleted, *_ = await pipe.execute()
        return bool(deleted)

    async def count(self, tenant: str) -> int:
        """How many live references ``tenant`` (``ANY_TENANT``: everyone) has."""
        listing = self._listing(tenant)
        await self._prune(keys=list(listing))
        return int(await self.client.zcard(listing[0]))

    async def page(self, offset: int, limit: int, tenant: str = ANY_TENANT) -> ReferencePage:
        """The live references of ``tenant`` (``ANY_TENANT``: all) newest first, and how many there are."""
        by_created, by_expiry = self._listing(tenant)
        await self._prune(keys=[by_created, by_expiry])
        pipe = self.client.pipeline(transaction=False)
        pipe.zrevrange(by_created, offset, offset + limit - 1)
        pipe.zcard(by_created)
        ids, total = await pipe.execute() if limit > 0 else ([], await self.client.zcard(by_created))
        pipe = self.client.pipeline(transaction=False)
        for reference_id in ids:
            pipe.hget(self.keys.reference(reference_id.decode()), "info")
        records = [StoredReference.from_json(raw) for raw in (await pipe.execute() if ids else [])
                   if raw is not None]
        return ReferencePage(items=records, total=int(total), offset=offset, limit=limit)

