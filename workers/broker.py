"""What every role of the queue protocol shares: the client, the keys, the consumer group.

The roles split the way arq splits them: ``workers.producer`` (the API side: enqueue, replies),
``workers.consumer`` (the worker side: read, reclaim, answer, liveness) and ``workers.admin``
(``insid3 queue``: stats, trimming, dead letters).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from workers import scripts
from workers.connection import is_nogroup, text
from workers.keys import DEFAULT_KEYS, GROUP, Keys


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


class Broker:
    """The queue of one deployment on an asyncio Redis client (``decode_responses=False``)."""

    def __init__(self, client: aioredis.Redis, keys: Keys = DEFAULT_KEYS) -> None:
        self.client = client
        self.keys = keys
        self._trim_acked = client.register_script(scripts.TRIM_ACKED)

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing (e.g. after a Redis restart)."""
        try:
            await self.client.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _group_numbers(self) -> tuple[int, int, int]:
        """(backlog, pending, length); the lag is capped by the length (trimming skews it)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self.keys.stream)
        pipe.xlen(self.keys.stream)
        exists, length = await pipe.execute()
        if not exists:
            return 0, 0, 0
        for group in await self.client.xinfo_groups(self.keys.stream):
            if text(group["name"]) == GROUP:
                lag = group.get("lag")
                return min(length if lag is None else int(lag), length), int(group["pending"]), length
        return length, 0, length

    async def _consumers(self) -> list[ConsumerInfo]:
        try:
            rows = await self.client.xinfo_consumers(self.keys.stream, GROUP)
        except ResponseError:
            return []
        return [ConsumerInfo(text(r["name"]), int(r["pending"]), int(r["idle"])) for r in rows]

    async def dead_letter_count(self) -> int:
        return int(await self.client.xlen(self.keys.dead))

    async def trim_acked(self) -> int:
        """Remove the entries every worker is done with (keeps memory at the size of the backlog)."""
        try:
            return int(await self._trim_acked(keys=[self.keys.stream], args=[GROUP]))
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            return 0
