"""The worker side of the queue: read and reclaim jobs, answer each exactly once, retry or
dead-letter failures, and announce liveness."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from core.serving import JobFailed
from workers import scripts
from workers.broker import Broker
from workers.codec import ProtocolError, RemoteError, Result, encode_reply
from workers.connection import is_nogroup, text
from workers.jobs import Job
from workers.keys import DEAD_MAXLEN, DEFAULT_KEYS, GROUP, INBOX_TTL_MS, STREAM_MAXLEN, Keys, inbox_alive


@dataclass(frozen=True)
class Reclaimed:
    """Jobs taken over from consumers that stopped answering, and ghost entries dropped."""

    jobs: list[Job]
    malformed: list[str]  # entry ids whose fields do not parse (acknowledged, dropped)
    deleted: list[str]  # pending entries whose data had been trimmed (removed by XAUTOCLAIM)
    stalled: list[Job] = field(default_factory=list)  # taken from a live worker that stalled on them


class Consumer(Broker):
    """One worker's operations on the job stream."""

    def __init__(self, client: aioredis.Redis, keys: Keys = DEFAULT_KEYS) -> None:
        super().__init__(client, keys)
        self._answer = client.register_script(scripts.ANSWER)
        self._dead_letter = client.register_script(scripts.DEAD_LETTER)
        self._requeue = client.register_script(scripts.REQUEUE)
        self._prune_consumers = client.register_script(scripts.PRUNE_CONSUMERS)
        self._reclaim_orphans = client.register_script(scripts.RECLAIM_ORPHANS)
        self._liveness = client.register_script(scripts.LIVENESS)

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Job]:
        """New jobs for ``consumer`` (XREADGROUP ... COUNT ... BLOCK), recreating a lost group.
        ``block_ms`` 0 does not block. Malformed entries are acknowledged and dropped."""
        args: dict[str, Any] = {"count": count} if block_ms <= 0 else {"count": count, "block": block_ms}
        try:
            reply = await self.client.xreadgroup(GROUP, consumer, {self.keys.stream: ">"}, **args)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            await self.ensure_group()
            return []
        jobs, malformed = [], []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                try:
                    jobs.append(Job.from_entry(entry_id, fields))
                except ProtocolError:
                    malformed.append(text(entry_id))
        if malformed:
            await self.client.xack(self.keys.stream, GROUP, *malformed)
        return jobs

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> Reclaimed:
        """XAUTOCLAIM up to ``count`` entries idle for ``min_idle_ms`` (the backstop of
        ``reclaim_orphans``), with their delivery counts; those of a consumer whose worker is
        still alive (it stalled on them) are in ``stalled``."""
        try:
            idle = await self.client.xpending_range(self.keys.stream, GROUP, "-", "+", count, idle=min_idle_ms)
            _, entries, deleted = await self.client.xautoclaim(
                self.keys.stream, GROUP, consumer, min_idle_ms, "0-0", count=count)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            await self.ensure_group()
            return Reclaimed([], [], [])
        owners = {text(row["message_id"]): text(row["consumer"]) for row in idle}
        jobs, malformed = await self._claimed(consumer, entries)
        alive = await self._alive({owners[job.entry_id] for job in jobs if job.entry_id in owners})
        stalled = [job for job in jobs if owners.get(job.entry_id) in alive]
        return Reclaimed([job for job in jobs if job not in stalled], malformed, [text(i) for i in deleted], stalled)

    async def _alive(self, workers: set[str]) -> set[str]:
        """The ``workers`` whose heartbeat has not lapsed."""
        names = sorted(workers)
        found = await self.client.mget([self.keys.worker(name) for name in names]) if names else []
        return {name for name, description in zip(names, found, strict=True) if description is not None}

    async def reclaim_orphans(self, consumer: str, count: int) -> Reclaimed:
        """Take over up to ``count`` pending entries of consumers whose worker heartbeat lapsed
        (killed, crashed, paused or cut off), whatever their idle time."""
        try:
            entries = await self._reclaim_orphans(
                keys=[self.keys.stream], args=[GROUP, consumer, self.keys.worker(""), count])
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            return Reclaimed([], [], [])
        jobs, malformed = await self._claimed(consumer, [(e[0], _pairs(e[1])) for e in entries if e])
        return Reclaimed(jobs, malformed, [])

    async def _claimed(self, consumer: str, entries: Sequence[tuple[Any, Mapping[bytes, bytes]]]
                       ) -> tuple[list[Job], list[str]]:
        """Jobs of entries just claimed by ``consumer``, with their delivery counts; malformed
        entries are acknowledged and dropped."""
        if not entries:
            return [], []
        deliveries = {}
        for row in await self.client.xpending_range(
            self.keys.stream, GROUP, min=entries[0][0], max=entries[-1][0], count=len(entries) + 64,
            consumername=consumer,
        ):
            deliveries[text(row["message_id"])] = int(row["times_delivered"])
        jobs, malformed = [], []
        for entry_id, fields in entries:
            try:
                jobs.append(Job.from_entry(entry_id, fields, deliveries.get(text(entry_id), 2)))
            except ProtocolError:
                malformed.append(text(entry_id))
        if malformed:
            await self.client.xack(self.keys.stream, GROUP, *malformed)
        return jobs, malformed

    async def abandoned(self, jobs: Sequence[Job]) -> dict[str, str]:
        """The jobs not worth running, by job id, with why: their caller cancelled them, or the
        API process waiting for their answer is gone."""
        if not jobs:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for job in jobs:
            pipe.exists(self.keys.cancelled(job.job_id))
            pipe.exists(inbox_alive(job.reply_to))
        found = await pipe.execute()
        reasons = {}
        for i, job in enumerate(jobs):
            if found[2 * i]:
                reasons[job.job_id] = "cancelled"
            elif not found[2 * i + 1]:
                reasons[job.job_id] = "api_gone"
        return reasons

    async def answer(self, replies: Sequence[tuple[Job, Result]]) -> list[bool]:
        """Acknowledge and answer jobs in one round trip; False where the job had been answered."""
        if not replies:
            return []
        args: list[str | bytes | int] = [GROUP, INBOX_TTL_MS]
        for job, result in replies:
            args += [job.entry_id, encode_reply(job.job_id, result)]
        done = await self._answer(keys=[self.keys.stream, *(job.reply_to for job, _ in replies)], args=args)
        return [bool(d) for d in done]

    async def skip(self, jobs: Sequence[Job]) -> int:
        """Acknowledge jobs without answering (their caller gave up or is gone); returns how many
        were still pending (a job taken over meanwhile by another worker is not counted twice)."""
        if not jobs:
            return 0
        return int(await self.client.xack(self.keys.stream, GROUP, *(job.entry_id for job in jobs)))

    async def requeue(self, job: Job) -> str | None:
        """Acknowledge ``job`` and add it again with ``attempt`` + 1 (None: it had been answered)."""
        retry = Job("", job.job_id, job.kind, job.deadline, job.reply_to, job.tries + 1, job.body)
        fields = [v for pair in retry.fields().items() for v in pair]
        new_id = await self._requeue(keys=[self.keys.stream],
                                     args=[GROUP, job.entry_id, STREAM_MAXLEN, *fields])
        return None if new_id is None else text(new_id)

    async def dead_letter(self, job: Job, error: str, consumer: str) -> bool:
        """Move ``job`` to the dead-letter stream and answer its caller with a ``job_failed`` error."""
        detail = f"job failed {job.tries} time(s) and was moved to the dead-letter stream: {error}"
        reply = encode_reply(job.job_id, RemoteError(JobFailed.code, detail, {"attempts": job.tries}))
        fields = job.fields(error=error, attempts=str(job.tries), consumer=consumer, entry=job.entry_id)
        done = await self._dead_letter(
            keys=[self.keys.stream, self.keys.dead, job.reply_to],
            args=[GROUP, job.entry_id, reply, INBOX_TTL_MS, DEAD_MAXLEN,
                  *(v for pair in fields.items() for v in pair)],
        )
        return bool(done)

    async def announce(self, name: str, description: Mapping[str, Any], ttl_ms: int) -> float:
        """Renew a worker's liveness, and its model's, for ``ttl_ms`` (at ``maxmemory`` too); returns
        the Redis clock (Unix seconds)."""
        described = json.dumps(dict(description))
        keys, values = [self.keys.worker(name), self.keys.alive], [described, name]
        if self.keys.model:
            keys.append(self.keys.model_alive)
            values.append(described)
        seconds, micros = await self._liveness(
            keys=[*keys, self.keys.models], args=[ttl_ms, self.keys.model or "", *values])
        return int(seconds) + int(micros) / 1e6

    async def retire(self, name: str) -> None:
        """Forget a worker that stops (and its consumer, when it holds no pending job)."""
        await self.client.delete(self.keys.worker(name))
        mine = [c for c in await self._consumers() if c.name == name]
        if mine and mine[0].pending == 0:
            await self.client.xgroup_delconsumer(self.keys.stream, GROUP, name)

    async def prune_consumers(self, min_idle_ms: int) -> list[str]:
        """Delete consumers with nothing pending that have not read for ``min_idle_ms`` (dead workers)."""
        try:
            pruned = await self._prune_consumers(keys=[self.keys.stream], args=[GROUP, min_idle_ms])
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            return []
        return [text(name) for name in pruned]


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """A flat [field, value, ...] list (a Lua script's stream entry) as a mapping."""
    return dict(zip(flat[0::2], flat[1::2], strict=True))
