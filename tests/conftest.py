"""Fixtures shared by every test area: a real redis-server, tiny random checkpoints, the parity data.
The helpers themselves live in ``tests/support``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import PARITY_DIR
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server started for the session on a free port."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``INSID3_TEST_REDIS_URL`` when given, else the session's own redis-server."""
    return os.environ.get("INSID3_TEST_REDIS_URL") or redis_server.url


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random DINOv3 checkpoint in the official layout, shrunk ViT-S/16 shapes (model size ``tiny``)."""
    from core.checkpoint import make_checkpoint

    path = tmp_path_factory.mktemp("weights") / "tiny_vits16.pth"
    make_checkpoint("tiny", path, seed=0)
    return path


@pytest.fixture(scope="session")
def basis_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One positional-basis cache for every in-process engine of the session."""
    return tmp_path_factory.mktemp("basis")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The golden data of the official implementation (../shared/parity)."""
    if not PARITY_DIR.is_dir():
        pytest.fail(f"parity fixtures not found at {PARITY_DIR} (set INSID3_PARITY_DIR)")
    return PARITY_DIR
