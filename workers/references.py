"""References in Redis: fp16 raw features and their ``core.serving.StoredReference`` record, with a
lifetime and a byte budget, shared by every API process and worker, listed per tenant (its
``owner``) and for all. Keys come from ``workers.keys``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis

from core.serving import ANY_TENANT, DEFAULT_TENANT, ReferencePage, ReferenceStorageFull, StoredReference, expiry
from workers import scripts
from workers.connection import text
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

    def __init__(self, client: aioredis.Redis, keys: Keys, budget_bytes: int = 0) -> None:
        self.client = client
        self.keys = keys
        self.budget_bytes = budget_bytes  # 0: no budget
        self._save = client.register_script(scripts.SAVE_REFERENCE)
        self._delete = client.register_script(scripts.DELETE_REFERENCE)
        self._extend = client.register_script(scripts.EXTEND_REFERENCE)
        self._prune = client.register_script(scripts.PRUNE_REFERENCES)

    def _listing(self, tenant: str) -> tuple[str, str]:
        """The (by created, by expiry) sorted sets listing ``tenant``'s references (all: ``ANY_TENANT``)."""
        if tenant == ANY_TENANT:
            return self.keys.references, self.keys.references_expiry
        return self.keys.tenant_references(tenant), self.keys.tenant_references_expiry(tenant)

    def _keys_of(self, reference_id: str, owner: str) -> list[str]:
        """The keys the save and delete scripts touch: the global listing, the byte count, the
        reference and its owner's listing."""
        return [*self._listing(ANY_TENANT), self.keys.references_bytes, self.keys.reference(reference_id),
                *self._listing(owner)]

    async def save(self, record: StoredReference, features: bytes, ttl_s: float) -> StoredReference | None:
        """Store a new reference; when one with this id exists, nothing is written and its record
        is returned instead. ``ReferenceStorageFull`` when it does not fit in the budget."""
        _, ttl_ms, score = _lifetime(record.created_at, ttl_s)
        reply = await self._save(
            keys=self._keys_of(record.reference_id, record.owner),
            args=[record.reference_id, features, record.to_json(), ttl_ms,
                  repr(record.created_at.timestamp()), score, self.budget_bytes],
        )
        status = text(reply[0])
        if status == "exists":
            return StoredReference.from_json(reply[1])
        if status == "full":
            raise ReferenceStorageFull(
                f"the reference budget is full ({int(reply[1]):,} of {self.budget_bytes:,} bytes used; "
                f"this reference needs {len(features):,}): delete references, wait for some to expire "
                f"or raise INSID3_REFERENCE_BUDGET_BYTES")
        return None

    async def extend(self, reference_id: str, ttl_s: float, name: str | None = None,
                     tenant: str = DEFAULT_TENANT) -> StoredReference | None:
        """Extend an existing reference of ``tenant`` to ``ttl_s`` from now (0: forever), never
        shortening it, and rename it to ``name`` when given; None when there is no such reference."""
        expires, ttl_ms, score = _lifetime(datetime.now(UTC), ttl_s)
        raw = await self._extend(
            keys=[self.keys.reference(reference_id), self.keys.references_expiry, self._listing(tenant)[1]],
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
        return bool(await self._delete(keys=self._keys_of(reference_id, owner), args=[reference_id]))

    async def used_bytes(self) -> int:
        """Bytes of reference features counted against the budget."""
        return int(await self.client.hget(self.keys.references_bytes, "total") or 0)

    async def count(self, tenant: str) -> int:
        """How many live references ``tenant`` (``ANY_TENANT``: everyone) has."""
        return int(await self.client.zcard(await self._pruned(tenant)))

    async def _pruned(self, tenant: str) -> str:
        """``tenant``'s listing by creation time, with the expired ids dropped first."""
        by_created, by_expiry = self._listing(tenant)
        bytes_key = [self.keys.references_bytes] if tenant == ANY_TENANT else []
        await self._prune(keys=[by_created, by_expiry, *bytes_key])
        return by_created

    async def page(self, offset: int, limit: int, tenant: str = ANY_TENANT) -> ReferencePage:
        """The live references of ``tenant`` (``ANY_TENANT``: all) newest first, and how many there are."""
        by_created = await self._pruned(tenant)
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
