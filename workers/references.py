"""Redis reference storage: fp16 raw features and their ``core.serving.StoredReference`` record, with
a lifetime and a byte budget, shared by every API process and worker, listed per owner and for all.

Storage only (``core.references.ReferenceStorage``); the rules are ``core.references``. Keys come
from ``workers.keys``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis

from core.references import UnreadableRecord
from core.serving import ANY_TENANT, ReferencePage, ReferenceStorageFull, StoredReference
from workers import scripts
from workers.connection import text
from workers.keys import Keys

NEVER = "+inf"
OWNER = "{owner}"  # stands for the owner's id in the listing keys handed to the delete script


def _lifetime(record: StoredReference) -> tuple[int, str]:
    """(ttl in ms from now, 0: never; expiry score) of ``record``."""
    if record.expires_at is None:
        return 0, NEVER
    remaining_ms = (record.expires_at - datetime.now(UTC)).total_seconds() * 1000
    return max(1, round(remaining_ms)), repr(record.expires_at.timestamp())


def _parse(reference_id: str, raw: bytes) -> StoredReference:
    try:
        return StoredReference.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadableRecord(f"its record in Redis is unreadable ({type(exc).__name__}: {exc})") from None


class RedisReferenceStorage:
    """Reads and writes references in Redis (``decode_responses=False`` client)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, budget_bytes: int = 0) -> None:
        self.client = client
        self.keys = keys
        self.budget_bytes = budget_bytes  # 0: no budget
        self._save = client.register_script(scripts.SAVE_REFERENCE)
        self._delete = client.register_script(scripts.DELETE_REFERENCE)
        self._replace = client.register_script(scripts.REPLACE_REFERENCE)
        self._prune = client.register_script(scripts.PRUNE_REFERENCES)

    def _listing(self, scope: str) -> tuple[str, str]:
        """The (by created, by expiry) sorted sets listing the references of ``scope`` (all: ``ANY_TENANT``)."""
        if scope == ANY_TENANT:
            return self.keys.references, self.keys.references_expiry
        return self.keys.tenant_references(scope), self.keys.tenant_references_expiry(scope)

    async def read(self, reference_id: str) -> StoredReference | None:
        raw = await self.client.hget(self.keys.reference(reference_id), "info")
        return None if raw is None else _parse(reference_id, raw)

    async def save(self, record: StoredReference, features: bytes) -> StoredReference | None:
        """Also ``ReferenceStorageFull`` when ``features`` do not fit in the budget."""
        ttl_ms, score = _lifetime(record)
        reply = await self._save(
            keys=[*self._listing(ANY_TENANT), self.keys.references_bytes, self.keys.reference(record.reference_id),
                  *self._listing(record.owner)],
            args=[record.reference_id, features, record.to_json(), ttl_ms,
                  repr(record.created_at.timestamp()), score, self.budget_bytes],
        )
        status = text(reply[0])
        if status == "exists":
            return _parse(record.reference_id, reply[1])
        if status == "full":
            raise ReferenceStorageFull(
                f"the reference budget is full ({int(reply[1]):,} of {self.budget_bytes:,} bytes used; "
                f"this reference needs {len(features):,}): delete references, wait for some to expire "
                f"or raise INSID3_REFERENCE_BUDGET_BYTES")
        return None

    async def replace(self, record: StoredReference, version: str) -> bool:
        ttl_ms, score = _lifetime(record)
        return bool(await self._replace(
            keys=[self.keys.reference(record.reference_id), self.keys.references_expiry,
                  self._listing(record.owner)[1]],
            args=[record.reference_id, version, record.to_json(), ttl_ms, score],
        ))

    async def delete(self, reference_id: str, version: str | None = None) -> bool:
        by_created, by_expiry = self._listing(OWNER)
        prefix, _, created_suffix = by_created.partition(OWNER)
        return bool(await self._delete(
            keys=[*self._listing(ANY_TENANT), self.keys.references_bytes, self.keys.reference(reference_id)],
            args=[reference_id, version or "", prefix, created_suffix, by_expiry.partition(OWNER)[2]],
        ))

    async def count(self, owner: str) -> int:
        return int(await self.client.zcard(await self._pruned(owner)))

    async def _pruned(self, scope: str) -> str:
        """The listing of ``scope`` by creation time, with the expired ids dropped first."""
        by_created, by_expiry = self._listing(scope)
        bytes_key = [self.keys.references_bytes] if scope == ANY_TENANT else []
        await self._prune(keys=[by_created, by_expiry, *bytes_key])
        return by_created

    async def page(self, scope: str, offset: int, limit: int) -> ReferencePage:
        """Ids listed whose reference is gone are taken off the listing."""
        by_created = await self._pruned(scope)
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(by_created)
        if limit > 0:  # (a stop of offset - 1 would mean "to the end")
            pipe.zrevrange(by_created, offset, offset + limit - 1)
        total, *listed = await pipe.execute()
        ids = [text(reference_id) for reference_id in (listed[0] if listed else [])]
        pipe = self.client.pipeline(transaction=False)
        for reference_id in ids:
            pipe.hget(self.keys.reference(reference_id), "info")
        records, unreadable, gone = [], [], []
        for reference_id, raw in zip(ids, await pipe.execute() if ids else [], strict=True):
            if raw is None:
                gone.append(reference_id)
                continue
            try:
                records.append(_parse(reference_id, raw))
            except UnreadableRecord:
                unreadable.append(reference_id)
        for listing in self._listing(scope) if gone else ():
            await self.client.zrem(listing, *gone)
        return ReferencePage(items=records, total=int(total) - len(gone), offset=offset, limit=limit,
                             unreadable=tuple(unreadable))

    async def features(self, reference_ids: Sequence[str]) -> dict[str, bytes]:
        """The serialised features of the live references among ``reference_ids``."""
        pipe = self.client.pipeline(transaction=False)
        for reference_id in reference_ids:
            pipe.hget(self.keys.reference(reference_id), "features")
        found = await pipe.execute() if reference_ids else []
        return {r: f for r, f in zip(reference_ids, found, strict=True) if f is not None}

    async def used_bytes(self) -> int:
        """Bytes of reference features counted against the budget."""
        return int(await self.client.hget(self.keys.references_bytes, "total") or 0)
