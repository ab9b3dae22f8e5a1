"""Fixtures of the API tests.

Route-level tests run in-process: ``create_app(settings, backend)`` under starlette's
``TestClient`` (which runs the lifespan), either with the real ``EmbeddedBackend`` on the tiny
random checkpoint (``client``: loaded once for the session) or with ``FakeBackend`` (``fake``).
One real ``insid3 serve`` process (``server``) remains for what needs uvicorn: the browser,
schemathesis, request bodies cut off by the server.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.auth import UNGUARDED
from app.inline_references import InlineReferences
from app.main import create_app
from app.settings import Settings
from tests.support.api import reference_id
from tests.support.fake_backend import FakeBackend
from tests.support.images import REFERENCE, Scene
from tests.support.net import eventually, free_port, port_open
from tests.support.processes import Process, wait_ready

IMAGE_SIZE = 128  # an 8x8 patch grid: coarse but enough to find a disc, and fast on a CPU
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="session")
def empty_pretrain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrain/ folder without weights (so that no real checkpoint on this machine is ever found)."""
    return tmp_path_factory.mktemp("pretrain")


@pytest.fixture(scope="session")
def tiny_settings(tiny_checkpoint: Path, basis_cache_dir: Path, empty_pretrain_dir: Path):
    """Factory: the ``Settings`` of the tiny random checkpoint on the CPU, with ``overrides``."""

    def make(**overrides: object) -> Settings:
        values = {"model_size": "tiny", "weights": str(tiny_checkpoint), "image_size": IMAGE_SIZE, "device": "cpu",
                  "basis_cache_dir": basis_cache_dir, "pretrain_dir": empty_pretrain_dir, **overrides}
        return Settings(**values)

    return make


@contextmanager
def in_process(settings: Settings, backend=None, ready: bool = True) -> Iterator[TestClient]:
    """A ``TestClient`` of ``create_app(settings, backend)``, lifespan started; waits for /readyz 200."""
    with TestClient(create_app(settings, backend)) as http:
        if ready:
            eventually(lambda: http.get("/readyz").status_code == 200, what="the in-process app to be ready")
        yield http


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the main app keeps references (shared with an app of another image size)."""
    return tmp_path_factory.mktemp("references")


@pytest.fixture(scope="session")
def client(tiny_settings, reference_dir: Path) -> Iterator[TestClient]:
    """The main app in-process with the real engine: tiny random checkpoint, 128 px, references on
    disk, 4 MP pixel limit. One engine for the whole session."""
    with in_process(tiny_settings(reference_dir=reference_dir, max_pixels=MAX_PIXELS)) as http:
        yield http


@pytest.fixture(scope="module")
def ref_id(client: TestClient) -> str:
    """The id of ``REFERENCE`` stored in the main app (created if needed)."""
    return reference_id(client, REFERENCE)


@pytest.fixture
def fake(tiny_settings) -> Iterator[tuple[TestClient, FakeBackend]]:
    """The app in-process on a ``FakeBackend`` (default settings of the main app)."""
    backend = FakeBackend()
    with in_process(tiny_settings(max_pixels=MAX_PIXELS), backend) as http:
        yield http, backend


class Server:
    """``insid3 serve`` as a real process (uvicorn) on a free port."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        env = {"INSID3_PRETRAIN_DIR": str(workdir / "pretrain"), **env}
        self.process = Process.insid3(["serve", "--port", str(self.port), *args], workdir / "serve.log", env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.process.output()


def tiny_args(checkpoint: Path, image_size: int = IMAGE_SIZE) -> list[str]:
    """``serve``/``worker`` options for the tiny random checkpoint on the CPU."""
    return ["--model-size", "tiny", "--weights", str(checkpoint), "--image-size", str(image_size), "--device", "cpu"]


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory: ``start_server(args, env=None, ready=True)`` starts one more real ``insid3 serve``;
    every server it started is stopped at the end of the session."""
    servers: list[Server] = []

    def start(args: list[str], env: dict[str, str] | None = None, ready: bool = True) -> Server:
        server = Server(tmp_path_factory.mktemp("serve"), args, env or {})
        servers.append(server)
        if ready:
            wait_ready(server.url, server.process)
        else:
            eventually(lambda: server.process.check_alive() or port_open(server.port), what=f"{server.url}")
        return server

    yield start
    for server in servers:
        server.process.stop()


@pytest.fixture(scope="session")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``insid3 serve`` under uvicorn: tiny random checkpoint, 128 px, 4 MP pixel limit."""
    workdir = tmp_path_factory.mktemp("serve")
    server = Server(workdir, tiny_args(tiny_checkpoint),
                    {"INSID3_MAX_PIXELS": str(MAX_PIXELS), "INSID3_REFERENCE_DIR": str(workdir / "references")})
    try:
        wait_ready(server.url, server.process)
        yield server
    finally:
        server.process.stop()


def failed_request_cleanup(http: TestClient, scene: Scene, stored_meanwhile: bool) -> int:
    """A request brings ``scene`` as an inline reference and fails; with ``stored_meanwhile``,
    another caller stores the same reference after it was created and before the failure (the
    real backend of ``http``, in its event loop). Returns the status of GET on the reference after."""

    async def scenario() -> str:
        backend = http.app.state.backend
        with contextlib.suppress(RuntimeError):
            async with InlineReferences(backend, UNGUARDED, 300.0, time.time() + 60) as inline:
                [mine] = await inline.create([(scene.png, scene.mask_png)])
                if stored_meanwhile:
                    _, created = await backend.create_reference(scene.png, scene.mask_png, None, None,
                                                                time.time() + 60, owner=UNGUARDED.tenant)
                    assert not created  # the other caller is answered 200: it existed
                raise RuntimeError("the request fails")
        return mine.reference_id

    return http.get(f"/references/{http.portal.call(scenario)}").status_code
