"""``insid3 queue``: inspect and maintain the job stream."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from workers.broker import Broker, ConsumerInfo
from workers.connection import is_nogroup, text
from workers.keys import GROUP


@dataclass(frozen=True)
class QueueStats:
    """What ``insid3 queue stats`` prints."""

    length: int  # entries in the stream
    backlog: int  # entries not yet delivered to any worker
    pending: int  # delivered, not yet acknowledged
    consumers: list[ConsumerInfo]
    dead_letters: int
    workers: list[dict[str, Any]]  # live workers' descriptions


class Admin(Broker):
    """Stats, trimming and dead letters of one job stream (``keys.model``'s)."""

    def for_model(self, model: str) -> Admin:
        """The same operations on ``model``'s stream."""
        return Admin(self.client, self.keys.for_model(model))

    async def models(self) -> list[str]:
        """Every model key some worker has served (one job stream each)."""
        return sorted(text(m) for m in await self.client.smembers(self.keys.models))

    async def trim(self, maxlen: int, clear_pending: bool) -> tuple[int, int]:
        """Keep the newest ``maxlen`` entries, delivered or not. With ``clear_pending``, also
        acknowledge the pending entries whose data is gone (otherwise they stay in the pending
        list as ghosts until a worker's XAUTOCLAIM drops them). Returns (trimmed, cleared)."""
        trimmed = int(await self.client.xtrim(self.keys.stream, maxlen=maxlen, approximate=False))
        if not clear_pending:
            return trimmed, 0
        first = await self.client.xrange(self.keys.stream, count=1)
        upper = f"({text(first[0][0])}" if first else "+"
        cleared = 0
        while True:
            try:
                rows = await self.client.xpending_range(self.keys.stream, GROUP, "-", upper, 1000)
            except ResponseError as exc:
                if not is_nogroup(exc):
                    raise
                return trimmed, cleared
            if not rows:
                return trimmed, cleared
            cleared += int(await self.client.xack(self.keys.stream, GROUP,
                                                  *(row["message_id"] for row in rows)))

    async def dead_letters(self, count: int) -> list[tuple[str, dict[str, str]]]:
        """The newest ``count`` dead letters (body left out)."""
        rows = await self.client.xrevrange(self.keys.dead, count=count)
        return [(text(entry_id), {text(k): text(v) for k, v in fields.items() if k != b"body"})
                for entry_id, fields in rows]

    async def purge_dead_letters(self) -> int:
        """Delete every dead letter; returns how many there were."""
        count = await self.dead_letter_count()
        await self.client.delete(self.keys.dead)
        return count

    async def stats(self) -> QueueStats:
        """Backlog, pending per consumer, dead letters and live workers."""
        backlog, pending, length = await self._group_numbers()
        workers = []
        async for key in self.client.scan_iter(match=self.keys.worker("*"), count=500):
            description = await self.client.get(key)
            if description is not None:
                workers.append(json.loads(description))
        return QueueStats(length, backlog, pending, await self._consumers(),
                          await self.dead_letter_count(), sorted(workers, key=lambda w: w.get("name", "")))
