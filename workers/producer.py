"""The API side of the queue: enqueue jobs (atomically bounded), collect replies from an inbox."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from workers import scripts
from workers.broker import Broker
from workers.connection import text
from workers.jobs import Job
from workers.keys import DEFAULT_KEYS, GROUP, STREAM_MAXLEN, Keys, inbox_alive


@dataclass(frozen=True)
class Enqueued:
    """What ``Producer.enqueue`` did: ``ids`` on success, else why nothing was queued."""

    ids: list[str] = field(default_factory=list)
    backlog: int | None = None  # set when the backlog bound refused the jobs
    no_worker: bool = False  # no worker is alive


class Producer(Broker):
    """Enqueues jobs and reads this process's replies."""

    def __init__(self, client: aioredis.Redis, keys: Keys = DEFAULT_KEYS) -> None:
        super().__init__(client, keys)
        self._enqueue = client.register_script(scripts.ENQUEUE)
        self._liveness = client.register_script(scripts.LIVENESS)

    async def enqueue(self, jobs: Sequence[Job], max_backlog: int, model: str | None = None,
                      alive_ttl_ms: int = 3000) -> Enqueued:
        """Atomically check a worker of ``model`` (default: the keys' model) is alive and the backlog
        bound, then XADD every job (all or none) to ``model``'s stream; renews
        the liveness of the jobs' inbox for ``alive_ttl_ms`` (workers drop the jobs of an API process
        that is gone)."""
        routed = self.keys if model is None else self.keys.for_model(model)
        inbox = jobs[0].reply_to if jobs else ""
        keys = [routed.stream, routed.model_alive, inbox_alive(inbox)]
        per_job = [[k for pair in job.fields().items() for k in pair] for job in jobs]
        args = [GROUP, max_backlog, STREAM_MAXLEN, len(jobs), len(per_job[0]) if per_job else 0, alive_ttl_ms]
        reply = await self._enqueue(keys=keys, args=args + [v for fields in per_job for v in fields])
        status = text(reply[0])
        if status == "ok":
            return Enqueued(ids=[text(i) for i in reply[1:]])
        if status == "full":
            return Enqueued(backlog=int(reply[1]))
        return Enqueued(no_worker=True)

    async def pop_replies(self, inbox: str, timeout_s: float, count: int = 256) -> list[bytes]:
        """Block until replies arrive in ``inbox`` (at most ``timeout_s``), then take up to ``count``."""
        reply = await self.client.blmpop(timeout_s, 1, inbox, direction="LEFT", count=count)
        return [] if reply is None else list(reply[1])

    async def backlog(self) -> int:
        """Entries not yet delivered to any worker, over every model's stream (and this one)."""
        models = {self.keys.model} | {text(m) for m in await self.client.smembers(self.keys.models)}
        total = 0
        for model in models:
            total += (await Producer(self.client, self.keys.for_model(model))._group_numbers())[0]
        return total

    async def live_models(self) -> dict[str, dict[str, Any]]:
        """The models some live worker serves, by model key, with the description of one of them."""
        models = sorted(text(m) for m in await self.client.smembers(self.keys.models))
        found = await self.client.mget([self.keys.for_model(m).model_alive for m in models]) if models else []
        return {m: json.loads(d) for m, d in zip(models, found, strict=True) if d is not None}

    async def keep_alive(self, inbox: str, ttl_ms: int) -> None:
        """Renew the liveness of this API process's ``inbox`` (at ``maxmemory`` too)."""
        await self._liveness(keys=[inbox_alive(inbox), self.keys.models], args=[ttl_ms, "", "1"])

    async def cancel(self, job_ids: Sequence[str], ttl_ms: int) -> None:
        """Mark jobs cancelled (for ``ttl_ms``: until their deadline) so that no worker runs them."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.set(self.keys.cancelled(job_id), "1", px=max(1, ttl_ms))
        await pipe.execute()
