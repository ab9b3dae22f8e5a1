"""The API side of the queue: enqueue jobs (atomically bounded), collect replies from an inbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from workers import scripts
from workers.broker import Broker
from workers.connection import text
from workers.jobs import Job
from workers.keys import DEFAULT_KEYS, GROUP, STREAM_MAXLEN, Keys


@dataclass(frozen=True)
class Enqueued:
    """What ``Producer.enqueue`` did: ``ids`` on success, else why nothing was queued."""

    ids: list[str] = field(default_factory=list)
    backlog: int | None = None  # set when the backlog bound refused the jobs
    missing_reference: str | None = None  # an unknown reference id
    no_worker: bool = False  # no worker is alive


class Producer(Broker):
    """Enqueues jobs and reads this process's replies."""

    def __init__(self, client: aioredis.Redis, keys: Keys = DEFAULT_KEYS) -> None:
        super().__init__(client, keys)
        self._enqueue = client.register_script(scripts.ENQUEUE)

    async def enqueue(self, jobs: Sequence[Job], max_backlog: int, reference_ids: Sequence[str] = ()
                      ) -> Enqueued:
        """Atomically check a worker is alive, the references exist and the backlog bound, then
        XADD every job (all or none)."""
        keys = [self.keys.stream, self.keys.alive, *(self.keys.reference(r) for r in reference_ids)]
        per_job = [[k for pair in job.fields().items() for k in pair] for job in jobs]
        args = [GROUP, max_backlog, STREAM_MAXLEN, len(jobs), len(per_job[0]) if per_job else 0]
        reply = await self._enqueue(keys=keys, args=args + [v for fields in per_job for v in fields])
        status = text(reply[0])
        if status == "ok":
            return Enqueued(ids=[text(i) for i in reply[1:]])
        if status == "full":
            return Enqueued(backlog=int(reply[1]))
        if status == "missing":
            return Enqueued(missing_reference=text(reply[1]).removeprefix(self.keys.reference("")))
        return Enqueued(no_worker=True)

    async def pop_replies(self, inbox: str, timeout_s: float, count: int = 256) -> list[bytes]:
        """Block until replies arrive in ``inbox`` (at most ``timeout_s``), then take up to ``count``."""
        reply = await self.client.blmpop(timeout_s, 1, inbox, direction="LEFT", count=count)
        return [] if reply is None else list(reply[1])

    async def backlog(self) -> int:
        """Entries not yet delivered to any worker."""
        return (await self._group_numbers())[0]

    async def workers_alive(self) -> bool:
        """Whether at least one worker renewed its liveness recently."""
        return bool(await self.client.exists(self.keys.alive))
