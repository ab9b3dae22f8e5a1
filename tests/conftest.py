"""Fixtures shared by every test area: a real redis-server, tiny random checkpoints, the parity data.
The helpers themselves live in ``tests/support``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import PARITY_DIR
from tests.support.redis_server import RedisServer

WARM_IMAGE_SIZES = (64, 128)  # the workers' and the API tests' image sizes


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
    """One positional-basis (and encoder-export) cache for every engine of the session, in-process
    or in the ``insid3`` processes the tests start (``INSID3_BASIS_CACHE_DIR``)."""
    return tmp_path_factory.mktemp("basis")


@pytest.fixture(scope="session", autouse=True)
def warm_basis_cache(tiny_checkpoint: Path, basis_cache_dir: Path) -> Iterator[None]:
    """Fill the session's cache for the tiny checkpoint at the image sizes the services use, once, so
    that the processes started side by side later only read it (as workers sharing a cache volume)."""
    from core.engine import Insid3

    for image_size in WARM_IMAGE_SIZES:
        Insid3.build(model_size="tiny", weights=str(tiny_checkpoint), image_size=image_size, device="cpu",
                     basis_cache_dir=basis_cache_dir)
    previous = os.environ.get("INSID3_BASIS_CACHE_DIR")
    os.environ["INSID3_BASIS_CACHE_DIR"] = str(basis_cache_dir)
    yield
    if previous is None:
        del os.environ["INSID3_BASIS_CACHE_DIR"]
    else:
        os.environ["INSID3_BASIS_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The golden data of the official implementation (tests/parity, or INSID3_PARITY_DIR)."""
    if not PARITY_DIR.is_dir():
        pytest.fail(f"parity fixtures not found at {PARITY_DIR} (set INSID3_PARITY_DIR)")
    return PARITY_DIR
