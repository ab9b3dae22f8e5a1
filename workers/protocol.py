"""The Redis Streams queue protocol shared by the API processes and the workers: ALL of it.

Layout (``p`` is the key prefix, ``insid3`` by default)::

    p:jobs             stream of jobs, consumer group "workers", XADD ... MAXLEN ~ STREAM_MAXLEN
    p:dead             stream of dead letters (a job's fields plus error, attempts, consumer)
    p:inbox:<client>   list: the replies to one API process (RPUSH by workers, BLMPOP by the API)
    p:ref:<id>         hash {features, info}: a reference (fp16 features), with a TTL
    p:refs             sorted set of reference ids by creation time (listing)
    p:refs:expiry      sorted set of reference ids by expiry time (pruning of the listing)
    p:worker:<name>    a live worker's description, expires unless its heartbeat renews it
    p:alive            exists while at least one worker is alive (renewed by every heartbeat)

A job entry holds ``job`` (uuid), ``kind`` (reference, segment, match), ``deadline`` (Unix
time), ``reply`` (the inbox key), ``attempt`` (1, 2, ...) and ``body`` (a frame, see ``pack``).
Exactly one answer per job: a worker answers with a script that XACKs the entry and pushes the
reply only when the XACK removed it from the pending list, so a job processed twice (a reclaimed
job whose first worker was only slow) is still answered once. Needs Redis >= 7.
"""

from __future__ import annotations

import json
import random
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import Insid3Error
from core.types import MatchResult, SegmentationResult

GROUP = "workers"
STREAM_MAXLEN = 10_000  # safety cap of XADD; must stay far above any backlog bound
DEAD_MAXLEN = 10_000
INBOX_TTL_MS = 600_000  # an inbox outlives its API process by this much
JOB_FAILED = "job_failed"  # error code of a dead-lettered job

KINDS = ("reference", "segment", "match")

_MAGIC = b"I3F1"


class ProtocolError(Exception):
    """A message that does not follow this protocol (corrupt or from another version)."""


# ------------------------------------------------------------------------------------ names


@dataclass(frozen=True)
class Keys:
    """Every Redis key of one deployment, derived from its prefix."""

    prefix: str = "insid3"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def references(self) -> str:
        return f"{self.prefix}:refs"

    @property
    def references_expiry(self) -> str:
        return f"{self.prefix}:refs:expiry"

    @property
    def alive(self) -> str:
        return f"{self.prefix}:alive"

    def inbox(self, client_id: str) -> str:
        return f"{self.prefix}:inbox:{client_id}"

    def reference(self, reference_id: str) -> str:
        return f"{self.prefix}:ref:{reference_id}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"


DEFAULT_KEYS = Keys()


# ------------------------------------------------------------------------------------ frames


def pack(header: Mapping[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    """One binary frame: magic, JSON header (with the blob sizes), then the raw blobs."""
    head = json.dumps({**header, "_blobs": [len(b) for b in blobs]}, separators=(",", ":")).encode()
    return b"".join([_MAGIC, struct.pack("<I", len(head)), head, *blobs])


def unpack(frame: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Inverse of ``pack``; ``ProtocolError`` for anything else."""
    if not frame.startswith(_MAGIC) or len(frame) < 8:
        raise ProtocolError("not an insid3 frame")
    (size,) = struct.unpack_from("<I", frame, 4)
    try:
        header = json.loads(frame[8:8 + size])
        sizes = header.pop("_blobs")
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"corrupt frame header: {exc}") from None
    blobs, offset = [], 8 + size
    for length in sizes:
        blobs.append(frame[offset:offset + length])
        offset += length
    if offset != len(frame):
        raise ProtocolError("frame length does not match its header")
    return header, blobs


# ------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ReferenceRequest:
    """Encode and store a reference (``mask`` None: match-only); ``ttl_s`` 0 never expires."""

    image: bytes
    mask: bytes | None
    name: str | None
    ttl_s: float


@dataclass(frozen=True)
class SegmentRequest:
    """Segment one target with stored references."""

    target: bytes
    reference_ids: list[str]
    tau: float | None = None
    merge_threshold: float | None = None


@dataclass(frozen=True)
class MatchRequest:
    """Map reference points to one target."""

    target: bytes
    reference_id: str
    points: list[tuple[float, float]]
    debiased: bool = True


Request = ReferenceRequest | SegmentRequest | MatchRequest


def request_kind(request: Request) -> str:
    """The ``kind`` field of a request's job entry."""
    if isinstance(request, ReferenceRequest):
        return "reference"
    return "segment" if isinstance(request, SegmentRequest) else "match"


def encode_request(request: Request) -> bytes:
    """The ``body`` frame of a job entry."""
    if isinstance(request, ReferenceRequest):
        blobs = [request.image] if request.mask is None else [request.image, request.mask]
        return pack({"name": request.name, "ttl_s": request.ttl_s}, blobs)
    if isinstance(request, SegmentRequest):
        header = {"references": request.reference_ids, "tau": request.tau,
                  "merge_threshold": request.merge_threshold}
        return pack(header, [request.target])
    header = {"reference": request.reference_id, "points": [list(p) for p in request.points],
              "debiased": request.debiased}
    return pack(header, [request.target])


def decode_request(kind: str, body: bytes) -> Request:
    """Inverse of ``encode_request``; ``ProtocolError`` for a corrupt body or unknown kind."""
    header, blobs = unpack(body)
    try:
        if kind == "reference":
            return ReferenceRequest(blobs[0], blobs[1] if len(blobs) > 1 else None,
                                    header["name"], float(header["ttl_s"]))
        if kind == "segment":
            return SegmentRequest(blobs[0], [str(r) for r in header["references"]],
                                  header["tau"], header["merge_threshold"])
        if kind == "match":
            points = [(float(x), float(y)) for x, y in header["points"]]
            return MatchRequest(blobs[0], str(header["reference"]), points, bool(header["debiased"]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ProtocolError(f"corrupt {kind} job body: {exc!r}") from None
    raise ProtocolError(f"unknown job kind {kind!r}")


# ------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """A job entry of the stream, as a worker sees it."""

    entry_id: str  # the stream entry id ("" before XADD)
    job_id: str
    kind: str
    deadline: float  # Unix time
    reply_to: str  # inbox key
    attempt: int  # 1 on first enqueue, +1 per retry
    body: bytes
    deliveries: int = 1  # deliveries of this entry (> 1 once reclaimed)

    @classmethod
    def new(cls, request: Request, deadline: float, reply_to: str) -> Job:
        """A fresh job (its entry id is assigned by XADD)."""
        return cls("", uuid.uuid4().hex, request_kind(request), deadline, reply_to, 1,
                   encode_request(request))

    @property
    def enqueued_at(self) -> float:
        """Unix time (Redis clock) the entry was added, from its id."""
        return int(self.entry_id.split("-", 1)[0]) / 1000.0

    @property
    def tries(self) -> int:
        """Times this job has been handed to a worker, this one included."""
        return self.attempt + self.deliveries - 1

    def fields(self, **extra: str | bytes) -> dict[str, str | bytes]:
        """The stream entry's fields."""
        return {"job": self.job_id, "kind": self.kind, "deadline": repr(self.deadline),
                "reply": self.reply_to, "attempt": str(self.attempt), "body": self.body, **extra}

    @classmethod
    def from_entry(cls, entry_id: bytes | str, fields: Mapping[bytes, bytes], deliveries: int = 1) -> Job:
        """Parse a stream entry; ``ProtocolError`` when fields are missing or malformed."""
        try:
            return cls(
                _text(entry_id), fields[b"job"].decode(), fields[b"kind"].decode(),
                float(fields[b"deadline"]), fields[b"reply"].decode(), int(fields[b"attempt"]),
                fields[b"body"], deliveries,
            )
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed job entry {_text(entry_id)}: {exc!r}") from None

    def request(self) -> Request:
        """The decoded request."""
        return decode_request(self.kind, self.body)


# ------------------------------------------------------------------------------------ replies


@dataclass(frozen=True)
class RemoteError:
    """An error a worker answered with: a ``core.errors`` / ``app.backend`` code and its detail."""

    code: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceCreated:
    """The answer to a reference job: the stored info (JSON of ``ReferenceInfo``) and whether new."""

    info: dict[str, Any]
    created: bool


Result = ReferenceCreated | SegmentationResult | MatchResult | RemoteError


def _array(blob: bytes, header: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(blob, dtype=header["dtype"]).reshape(header["shape"]).copy()


def _array_header(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": array.dtype.str, "shape": list(array.shape)}


def encode_reply(job_id: str, result: Result) -> bytes:
    """The inbox message that answers ``job_id``."""
    if isinstance(result, RemoteError):
        return pack({"job": job_id, "type": "error", "code": result.code, "detail": result.detail,
                     "extra": result.extra})
    if isinstance(result, ReferenceCreated):
        return pack({"job": job_id, "type": "reference", "info": result.info, "created": result.created})
    if isinstance(result, SegmentationResult):
        mask = np.ascontiguousarray(result.mask, dtype=bool)
        grid = None if result.grid_mask is None else np.ascontiguousarray(result.grid_mask, dtype=bool)
        header = {"job": job_id, "type": "segment", "shape": list(mask.shape), "score": result.score,
                  "timings": result.timings, "grid": None if grid is None else list(grid.shape)}
        blobs = [np.packbits(mask).tobytes()] + ([] if grid is None else [np.packbits(grid).tobytes()])
        return pack(header, blobs)
    points = np.ascontiguousarray(result.points, dtype=np.float32)
    confidence = np.ascontiguousarray(result.confidence, dtype=np.float32)
    header = {"job": job_id, "type": "match", "points": _array_header(points),
              "confidence": _array_header(confidence), "timings": result.timings}
    return pack(header, [points.tobytes(), confidence.tobytes()])


def _unpack_bits(blob: bytes, shape: Sequence[int]) -> np.ndarray:
    count = int(np.prod(shape))
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8), count=count).astype(bool).reshape(shape)


def decode_reply(message: bytes) -> tuple[str, Result]:
    """Inverse of ``encode_reply``: the job id and its result."""
    header, blobs = unpack(message)
    try:
        job_id, kind = str(header["job"]), header["type"]
        if kind == "error":
            return job_id, RemoteError(header["code"], header["detail"], header.get("extra") or {})
        if kind == "reference":
            return job_id, ReferenceCreated(header["info"], bool(header["created"]))
        if kind == "segment":
            grid = None if header["grid"] is None else _unpack_bits(blobs[1], header["grid"])
            mask = _unpack_bits(blobs[0], header["shape"])
            return job_id, SegmentationResult(mask, float(header["score"]), header["timings"], grid)
        if kind == "match":
            return job_id, MatchResult(_array(blobs[0], header["points"]),
                                       _array(blobs[1], header["confidence"]), header["timings"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ProtocolError(f"corrupt reply: {exc!r}") from None
    raise ProtocolError(f"unknown reply type {kind!r}")


def error_of(exc: Insid3Error) -> RemoteError:
    """The reply for an engine or backend error (its class is rebuilt from ``code`` by the client)."""
    extra = {"reference_id": exc.reference_id} if hasattr(exc, "reference_id") else {}
    return RemoteError(exc.code, exc.detail, extra)


# ------------------------------------------------------------------------------- Lua scripts

# KEYS: stream, alive, reference keys...   ARGV: group, max_backlog, maxlen, n_jobs, n_fields, fields...
# -> {"ok", id...} | {"full", backlog} | {"missing", key} | {"no_worker"}
_ENQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return {'no_worker'} end
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {'missing', KEYS[i]} end
end
local backlog, found = 0, false
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local info = {}
    for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
    if info['name'] == ARGV[1] then
      found = true
      local length = redis.call('XLEN', KEYS[1])
      backlog = info['lag'] or length
      if backlog > length then backlog = length end
    end
  end
end
if not found then redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM') end
local n, per = tonumber(ARGV[4]), tonumber(ARGV[5])
if backlog + n > tonumber(ARGV[2]) then return {'full', backlog} end
local ids, pos = {'ok'}, 6
for i = 1, n do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, pos, pos + per - 1))
  pos = pos + per
end
return ids
"""

# KEYS: stream, inbox of job 1, inbox of job 2...   ARGV: group, inbox ttl ms, id 1, reply 1, id 2, reply 2...
# -> per job: 1 answered, 0 already answered (acknowledged before)
_ANSWER = """
local done = {}
for i = 2, #KEYS do
  local id, reply = ARGV[2 * i - 1], ARGV[2 * i]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    redis.call('RPUSH', KEYS[i], reply)
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    done[#done + 1] = 1
  else
    done[#done + 1] = 0
  end
end
return done
"""

# KEYS: stream, dead, inbox   ARGV: group, entry id, reply, inbox ttl ms, dead maxlen, fields...
_DEAD_LETTER = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 6))
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
"""

# KEYS: stream   ARGV: group, entry id, maxlen, fields...   -> the new entry id, or false
_REQUEUE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
"""

# KEYS: stream   ARGV: group   -> entries removed. Drops the entries every consumer is done with:
# those older than both the oldest pending entry and the group's last delivered entry.
_TRIM_ACKED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
  if info['name'] == ARGV[1] then last = info['last-delivered-id'] end
end
if not last then return 0 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
local ms, seq = string.match(last, '(%d+)-(%d+)')
local minid = ms .. '-' .. (tonumber(seq) + 1)
if pending[1] > 0 then minid = pending[2] end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
"""


# KEYS: stream   ARGV: group, min idle ms   -> names of the deleted consumers. Atomic, so a consumer
# that reads meanwhile cannot lose its new pending entries with it.
_PRUNE_CONSUMERS = """
local pruned = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for j = 1, #c, 2 do info[c[j]] = c[j + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    pruned[#pruned + 1] = info['name']
  end
end
return pruned
"""

# ------------------------------------------------------------------------------- connections

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)  # errors that a reconnect may cure


class Backoff:
    """Exponential backoff with full jitter, for reconnect loops."""

    def __init__(self, first_s: float = 0.1, max_s: float = 5.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.max_s, self.first_s * 2 ** self.failures))

    def reset(self) -> None:
        self.failures = 0


def connect(url: str) -> aioredis.Redis:
    """A binary-safe asyncio client with short retries (callers add their own reconnect loop)."""
    return aioredis.from_url(
        url, decode_responses=False, socket_connect_timeout=2.0, socket_timeout=30.0,
        socket_keepalive=True, retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 2),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def is_nogroup(exc: ResponseError) -> bool:
    """Whether Redis lost the consumer group (a restart without persistence), also inside a script."""
    return "NOGROUP" in str(exc)


# ---------------------------------------------------------------------------- the queue


@dataclass(frozen=True)
class Enqueued:
    """What ``Queue.enqueue`` did: ``ids`` on success, else why nothing was queued."""

    ids: list[str] = field(default_factory=list)
    backlog: int | None = None  # set when the backlog bound refused the jobs
    missing_reference: str | None = None  # an unknown reference id
    no_worker: bool = False  # no worker is alive


@dataclass(frozen=True)
class Reclaimed:
    """Jobs taken over from consumers that stopped answering, and ghost entries dropped."""

    jobs: list[Job]
    malformed: list[str]  # entry ids whose fields do not parse (acknowledged, dropped)
    deleted: list[str]  # pending entries whose data had been trimmed (removed by XAUTOCLAIM)


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True)
class QueueStats:
    """What ``insid3 queue stats`` prints."""

    length: int  # entries in the stream
    backlog: int  # entries not yet delivered to any worker
    pending: int  # delivered, not yet acknowledged
    consumers: list[ConsumerInfo]
    dead_letters: int
    workers: list[dict[str, Any]]  # live workers' descriptions


class Queue:
    """The queue operations of one deployment on an asyncio Redis client (``decode_responses=False``)."""

    def __init__(self, client: aioredis.Redis, keys: Keys = DEFAULT_KEYS) -> None:
        self.client = client
        self.keys = keys
        self._enqueue = client.register_script(_ENQUEUE)
        self._answer = client.register_script(_ANSWER)
        self._dead_letter = client.register_script(_DEAD_LETTER)
        self._requeue = client.register_script(_REQUEUE)
        self._trim_acked = client.register_script(_TRIM_ACKED)
        self._prune_consumers = client.register_script(_PRUNE_CONSUMERS)

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing (e.g. after a Redis restart)."""
        try:
            await self.client.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ------------------------------------------------------------------------ producers

    async def enqueue(self, jobs: Sequence[Job], max_backlog: int, reference_ids: Sequence[str] = ()
                      ) -> Enqueued:
        """Atomically check a worker is alive, the references exist and the backlog bound, then
        XADD every job (all or none)."""
        keys = [self.keys.stream, self.keys.alive, *(self.keys.reference(r) for r in reference_ids)]
        per_job = [[k for pair in job.fields().items() for k in pair] for job in jobs]
        args = [GROUP, max_backlog, STREAM_MAXLEN, len(jobs), len(per_job[0]) if per_job else 0]
        reply = await self._enqueue(keys=keys, args=args + [v for fields in per_job for v in fields])
        status = _text(reply[0])
        if status == "ok":
            return Enqueued(ids=[_text(i) for i in reply[1:]])
        if status == "full":
            return Enqueued(backlog=int(reply[1]))
        if status == "missing":
            return Enqueued(missing_reference=_text(reply[1]).removeprefix(self.keys.reference("")))
        return Enqueued(no_worker=True)

    async def pop_replies(self, inbox: str, timeout_s: float, count: int = 256) -> list[bytes]:
        """Block until replies arrive in ``inbox`` (at most ``timeout_s``), then take up to ``count``."""
        reply = await self.client.blmpop(timeout_s, 1, inbox, direction="LEFT", count=count)
        return [] if reply is None else list(reply[1])

    async def backlog(self) -> int:
        """Entries not yet delivered to any worker."""
        return (await self._group_numbers())[0]

    async def dead_letter_count(self) -> int:
        return int(await self.client.xlen(self.keys.dead))

    # ------------------------------------------------------------------------ consumers

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
                    malformed.append(_text(entry_id))
        if malformed:
            await self.client.xack(self.keys.stream, GROUP, *malformed)
        return jobs

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> Reclaimed:
        """XAUTOCLAIM up to ``count`` entries idle for ``min_idle_ms`` (their consumer died or hung),
        with their delivery counts."""
        try:
            _, entries, deleted = await self.client.xautoclaim(
                self.keys.stream, GROUP, consumer, min_idle_ms, "0-0", count=count)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            await self.ensure_group()
            return Reclaimed([], [], [])
        if not entries:
            return Reclaimed([], [], [_text(i) for i in deleted])
        deliveries = {}
        for row in await self.client.xpending_range(
            self.keys.stream, GROUP, min=entries[0][0], max=entries[-1][0], count=len(entries) + 64,
            consumername=consumer,
        ):
            deliveries[_text(row["message_id"])] = int(row["times_delivered"])
        jobs, malformed = [], []
        for entry_id, fields in entries:
            try:
                jobs.append(Job.from_entry(entry_id, fields, deliveries.get(_text(entry_id), 2)))
            except ProtocolError:
                malformed.append(_text(entry_id))
        if malformed:
            await self.client.xack(self.keys.stream, GROUP, *malformed)
        return Reclaimed(jobs, malformed, [_text(i) for i in deleted])

    async def answer(self, replies: Sequence[tuple[Job, Result]]) -> list[bool]:
        """Acknowledge and answer jobs in one round trip; False where the job had been answered."""
        if not replies:
            return []
        args: list[str | bytes | int] = [GROUP, INBOX_TTL_MS]
        for job, result in replies:
            args += [job.entry_id, encode_reply(job.job_id, result)]
        done = await self._answer(keys=[self.keys.stream, *(job.reply_to for job, _ in replies)], args=args)
        return [bool(d) for d in done]

    async def skip(self, jobs: Sequence[Job]) -> None:
        """Acknowledge jobs without answering (their caller gave up: deadline passed)."""
        if jobs:
            await self.client.xack(self.keys.stream, GROUP, *(job.entry_id for job in jobs))

    async def requeue(self, job: Job) -> str | None:
        """Acknowledge ``job`` and add it again with ``attempt`` + 1 (None: it had been answered)."""
        retry = Job("", job.job_id, job.kind, job.deadline, job.reply_to, job.tries + 1, job.body)
        fields = [v for pair in retry.fields().items() for v in pair]
        new_id = await self._requeue(keys=[self.keys.stream],
                                     args=[GROUP, job.entry_id, STREAM_MAXLEN, *fields])
        return None if new_id is None else _text(new_id)

    async def dead_letter(self, job: Job, error: str, consumer: str) -> bool:
        """Move ``job`` to the dead-letter stream and answer its caller with a ``job_failed`` error."""
        detail = f"job failed {job.tries} time(s) and was moved to the dead-letter stream: {error}"
        reply = encode_reply(job.job_id, RemoteError(JOB_FAILED, detail, {"attempts": job.tries}))
        fields = job.fields(error=error, attempts=str(job.tries), consumer=consumer, entry=job.entry_id)
        done = await self._dead_letter(
            keys=[self.keys.stream, self.keys.dead, job.reply_to],
            args=[GROUP, job.entry_id, reply, INBOX_TTL_MS, DEAD_MAXLEN,
                  *(v for pair in fields.items() for v in pair)],
        )
        return bool(done)

    # ------------------------------------------------------------------------ liveness

    async def announce(self, name: str, description: Mapping[str, Any], ttl_ms: int) -> float:
        """Renew a worker's liveness for ``ttl_ms``; returns the Redis clock (Unix seconds)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.worker(name), json.dumps(dict(description)), px=ttl_ms)
        pipe.set(self.keys.alive, name, px=ttl_ms)
        pipe.time()
        _, _, (seconds, micros) = await pipe.execute()
        return seconds + micros / 1e6

    async def retire(self, name: str) -> None:
        """Forget a worker that stops (and its consumer, when it holds no pending job)."""
        await self.client.delete(self.keys.worker(name))
        mine = [c for c in await self._consumers() if c.name == name]
        if mine and mine[0].pending == 0:
            await self.client.xgroup_delconsumer(self.keys.stream, GROUP, name)

    async def workers_alive(self) -> bool:
        """Whether at least one worker renewed its liveness recently."""
        return bool(await self.client.exists(self.keys.alive))

    # ------------------------------------------------------------------------ maintenance

    async def trim_acked(self) -> int:
        """Remove the entries every worker is done with (keeps memory at the size of the backlog)."""
        try:
            return int(await self._trim_acked(keys=[self.keys.stream], args=[GROUP]))
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            return 0

    async def trim(self, maxlen: int, clear_pending: bool) -> tuple[int, int]:
        """Keep the newest ``maxlen`` entries, delivered or not. With ``clear_pending``, also
        acknowledge the pending entries whose data is gone (otherwise they stay in the pending
        list as ghosts until a worker's XAUTOCLAIM drops them). Returns (trimmed, cleared)."""
        trimmed = int(await self.client.xtrim(self.keys.stream, maxlen=maxlen, approximate=False))
        if not clear_pending:
            return trimmed, 0
        first = await self.client.xrange(self.keys.stream, count=1)
        upper = f"({_text(first[0][0])}" if first else "+"
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

    async def prune_consumers(self, min_idle_ms: int) -> list[str]:
        """Delete consumers with nothing pending that have not read for ``min_idle_ms`` (dead workers)."""
        try:
            pruned = await self._prune_consumers(keys=[self.keys.stream], args=[GROUP, min_idle_ms])
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            return []
        return [_text(name) for name in pruned]

    async def dead_letters(self, count: int) -> list[tuple[str, dict[str, str]]]:
        """The newest ``count`` dead letters (body left out)."""
        rows = await self.client.xrevrange(self.keys.dead, count=count)
        return [(_text(entry_id), {_text(k): _text(v) for k, v in fields.items() if k != b"body"})
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

    async def _group_numbers(self) -> tuple[int, int, int]:
        """(backlog, pending, length); the lag is capped by the length (trimming skews it)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self.keys.stream)
        pipe.xlen(self.keys.stream)
        exists, length = await pipe.execute()
        if not exists:
            return 0, 0, 0
        for group in await self.client.xinfo_groups(self.keys.stream):
            if _text(group["name"]) == GROUP:
                lag = group.get("lag")
                return min(length if lag is None else int(lag), length), int(group["pending"]), length
        return length, 0, length

    async def _consumers(self) -> list[ConsumerInfo]:
        try:
            rows = await self.client.xinfo_consumers(self.keys.stream, GROUP)
        except ResponseError:
            return []
        return [ConsumerInfo(_text(r["name"]), int(r["pending"]), int(r["idle"])) for r in rows]
