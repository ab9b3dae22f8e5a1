"""References in Redis: fp16 features and their ``ReferenceInfo``, with a TTL, shared by every
API process and worker. Keys come from ``workers.protocol.Keys``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from app.backend import ReferenceInfo
from workers.protocol import Keys

NEVER = "+inf"

# KEYS: ref, by created, by expiry   ARGV: id, features, info, ttl ms (0: never), created, expires
# -> nil when stored, else the info of the reference already there (nothing written).
_SAVE = """
local existing = redis.call('HGET', KEYS[1], 'info')
if existing then return existing end
redis.call('HSET', KEYS[1], 'features', ARGV[2], 'info', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
return false
"""

# KEYS: ref, by expiry   ARGV: id, ttl ms (0: never), expires_at (ISO or ''), expiry score
# -> the updated info, or nil when the reference is gone.
_EXTEND = """
local raw = redis.call('HGET', KEYS[1], 'info')
if not raw then return false end
local info = cjson.decode(raw)
if ARGV[3] == '' then info['expires_at'] = cjson.null else info['expires_at'] = ARGV[3] end
raw = cjson.encode(info)
redis.call('HSET', KEYS[1], 'info', raw)
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('PERSIST', KEYS[1]) end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return raw
"""

# KEYS: by created, by expiry   -> drops the ids whose expiry time has passed (Redis clock)
_PRUNE = """
local now = redis.call('TIME')
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now[1] + now[2] / 1000000)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return #expired
"""


def expires_at(now: datetime, ttl_s: float) -> datetime | None:
    """When a reference created or refreshed at ``now`` expires (None: ``ttl_s`` 0, never)."""
    return None if ttl_s <= 0 else now + timedelta(seconds=ttl_s)


def _expiry(now: datetime, ttl_s: float) -> tuple[datetime | None, int, str]:
    """(expires_at, ttl in ms, expiry score) of a reference created or refreshed at ``now``."""
    expires = expires_at(now, ttl_s)
    if expires is None:
        return None, 0, NEVER
    return expires, max(1, round(ttl_s * 1000)), repr(expires.timestamp())


class ReferenceStore:
    """Reads and writes references in Redis (``decode_responses=False`` client)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._save = client.register_script(_SAVE)
        self._extend = client.register_script(_EXTEND)
        self._prune = client.register_script(_PRUNE)

    async def save(self, info: ReferenceInfo, features: bytes, ttl_s: float) -> ReferenceInfo | None:
        """Store a new reference; when one with this id exists, nothing is written and its info
        is returned instead."""
        _, ttl_ms, score = _expiry(info.created_at, ttl_s)
        existing = await self._save(
            keys=[self.keys.reference(info.reference_id), self.keys.references, self.keys.references_expiry],
            args=[info.reference_id, features, info.model_dump_json(), ttl_ms,
                  repr(info.created_at.timestamp()), score],
        )
        return None if existing is None else ReferenceInfo.model_validate_json(existing)

    async def extend(self, reference_id: str, ttl_s: float) -> ReferenceInfo | None:
        """Give an existing reference a new lifetime of ``ttl_s`` from now (0: forever)."""
        expires, ttl_ms, score = _expiry(datetime.now(UTC), ttl_s)
        raw = await self._extend(
            keys=[self.keys.reference(reference_id), self.keys.references_expiry],
            args=[reference_id, ttl_ms, "" if expires is None else expires.isoformat(), score],
        )
        return None if raw is None else ReferenceInfo.model_validate_json(raw)

    async def info(self, reference_id: str) -> ReferenceInfo | None:
        """The info of a live reference."""
        raw = await self.client.hget(self.keys.reference(reference_id), "info")
        return None if raw is None else ReferenceInfo.model_validate_json(raw)

    async def features(self, reference_ids: Sequence[str]) -> dict[str, bytes]:
        """The serialised features of the live references among ``reference_ids``."""
        pipe = self.client.pipeline(transaction=False)
        for reference_id in reference_ids:
            pipe.hget(self.keys.reference(reference_id), "features")
        found = await pipe.execute() if reference_ids else []
        return {r: f for r, f in zip(reference_ids, found, strict=True) if f is not None}

    async def delete(self, reference_id: str) -> bool:
        """Forget a reference; False when there was none."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.reference(reference_id))
        pipe.zrem(self.keys.references, reference_id)
        pipe.zrem(self.keys.references_expiry, reference_id)
        deleted, _, _ = await pipe.execute()
        return bool(deleted)

    async def page(self, offset: int, limit: int) -> tuple[list[ReferenceInfo], int]:
        """Live references newest first, and how many there are."""
        await self._prune(keys=[self.keys.references, self.keys.references_expiry])
        pipe = self.client.pipeline(transaction=False)
        pipe.zrevrange(self.keys.references, offset, offset + limit - 1)
        pipe.zcard(self.keys.references)
        ids, total = await pipe.execute() if limit > 0 else ([], await self.client.zcard(self.keys.references))
        pipe = self.client.pipeline(transaction=False)
        for reference_id in ids:
            pipe.hget(self.keys.reference(reference_id.decode()), "info")
        infos = [ReferenceInfo.model_validate_json(raw) for raw in (await pipe.execute() if ids else [])
                 if raw is not None]
        return infos, int(total)

