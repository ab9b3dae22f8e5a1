"""Connecting to Redis: the client, which errors a reconnect may cure, and backoff."""

from __future__ import annotations

import random

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def is_nogroup(exc: ResponseError) -> bool:
    """Whether Redis lost the consumer group (a restart without persistence), also inside a script."""
    return "NOGROUP" in str(exc)


