"""Fixtures of the worker-pool tests: a fresh Redis database and a process launcher per module."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.workers.helpers import Launcher

_databases = itertools.cycle(range(1, 14))  # of 0..15: 0, 14 and 15 are left to the other test areas


def database_url(redis_url: str) -> str:
    """``redis_url`` on a Redis database no other test uses, emptied."""
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    url = f"{base}/{next(_databases)}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def launcher(redis_url: str, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Processes on a fresh Redis database of the session's redis-server, for one test module."""
    launcher = Launcher(database_url(redis_url), tiny_checkpoint, tmp_path_factory.mktemp("logs"))
    yield launcher
    launcher.close()
