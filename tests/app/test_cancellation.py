"""Abandoned work is dropped and rendering is bounded, whatever the backend: the HTTP layer over a
fake backend (the same route code serves the embedded and the Redis mode)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from app.main import create_app
from app.settings import Settings
from core.serving import StoredReference
from tests.support.api import assert_error
from tests.support.fake_backend import FakeBackend
from tests.support.images import TARGET, encode
from tests.support.live_server import LiveServer
from tests.support.metrics import metric
from tests.support.net import eventually

RECORD = StoredReference("0" * 32, None, 200, 160, 100, "fake", 128, datetime.now(UTC), None)


def settings(**fields: object) -> Settings:
    return Settings(model_size="tiny", image_size=128, device="cpu", **fields)


def segment_files(fmt: str) -> dict:
    return {"files": {"target": ("t.png", TARGET.png, "image/png")},
            "data": {"reference_ids": RECORD.reference_id, "format": fmt}}


@pytest.fixture(scope="module")
def held() -> Iterator[tuple[LiveServer, FakeBackend]]:
    backend = FakeBackend(hold=True, references=[RECORD])
    live = LiveServer(create_app(settings(), backend)).start()
    yield live, backend
    live.stop()


def test_a_client_that_disconnects_cancels_its_backend_call(held):
    live, backend = held
    gone_before = metric(live.url, "insid3_http_requests_total", {"route": "/segment", "status": "499"})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live.url}/segment", timeout=1.0, **segment_files("rle"))  # then the client hangs up
    eventually(backend.cancelled.is_set)
    eventually(lambda: metric(live.url, "insid3_http_requests_total",
                              {"route": "/segment", "status": "499"}) == gone_before + 1)
    assert metric(live.url, "insid3_http_requests_total", {"route": "/segment", "status": "500"}) == 0


class SlowRendering:
    """Stands in for ``result_png``: counts renderings (at once and in all) and blocks until released."""

    def __init__(self) -> None:
        self.started = 0
        self.running = 0
        self.most_at_once = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, *args: object) -> bytes:
        with self._lock:
            self.started += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.release.wait(timeout=60)
        with self._lock:
            self.running -= 1
        return b"\x89PNG fake"


@pytest.fixture
def slow_rendering(monkeypatch) -> Iterator[SlowRendering]:
    rendering = SlowRendering()
    monkeypatch.setattr("app.routes.segment.result_png", rendering)
    yield rendering
    rendering.release.set()


def in_process(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60)


def test_the_deadline_covers_rendering(slow_rendering):
    async def scenario() -> httpx.Response:
        async with in_process(create_app(settings(), FakeBackend(references=[RECORD]))) as http:
            response = await http.post("/segment", headers={"X-Request-Timeout": "0.5"}, **segment_files("png"))
            slow_rendering.release.set()  # the rendering thread was abandoned, not killed: let it end
            return response

    response = asyncio.run(scenario())
    assert_error(response, 504, "deadline_exceeded")
    assert "rendering" in response.json()["detail"]


def test_no_rendering_starts_past_the_deadline(slow_rendering):
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with in_process(create_app(settings(render_concurrency=1), FakeBackend(references=[RECORD]))) as http:
            holder = asyncio.create_task(http.post("/segment", **segment_files("png")))
            await asyncio.to_thread(eventually, lambda: slow_rendering.started == 1)
            late = await http.post("/segment", headers={"X-Request-Timeout": "0.5"}, **segment_files("png"))
            slow_rendering.release.set()
            return await holder, late

    held, late = asyncio.run(scenario())
    assert held.status_code == 200 and held.content == b"\x89PNG fake"
    assert_error(late, 504, "deadline_exceeded")
    assert slow_rendering.started == 1  # the late request never rendered: it only waited for a slot


def test_rendering_concurrency_is_bounded_by_the_setting(slow_rendering):
    async def scenario() -> list[httpx.Response]:
        async with in_process(create_app(settings(render_concurrency=2), FakeBackend(references=[RECORD]))) as http:
            requests = [asyncio.create_task(http.post("/segment", **segment_files("png"))) for _ in range(4)]
            await asyncio.to_thread(eventually, lambda: slow_rendering.started == 2)
            await asyncio.sleep(0.3)  # the other two wait for a slot rather than start
            waiting = slow_rendering.started
            slow_rendering.release.set()
            responses = await asyncio.gather(*requests)
            assert waiting == 2
            return responses

    assert [r.status_code for r in asyncio.run(scenario())] == [200] * 4
    assert slow_rendering.started == 4 and slow_rendering.most_at_once == 2


def noise(height: int, width: int) -> np.ndarray:
    """A mask of millions of tiny components: polygons and instances of it would take minutes."""
    return np.random.default_rng(0).random((height, width)) < 0.5


@pytest.mark.parametrize("fmt, instances", [("polygons", "false"), ("rle", "true")])
def test_renderings_stop_at_their_deadline_and_free_their_slots(fmt: str, instances: str) -> None:
    big = encode(np.zeros((4000, 4000), dtype=np.uint8))  # 16 Mpx, 16 KB

    def costly() -> dict:
        return {"files": {"target": ("big.png", big, "image/png")},
                "data": {"reference_ids": RECORD.reference_id, "format": fmt, "instances": instances},
                "headers": {"X-Request-Timeout": "2"}}

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        backend = FakeBackend(references=[RECORD], mask=noise)
        async with in_process(create_app(settings(render_concurrency=2), backend)) as http:
            stuck = [asyncio.create_task(http.post("/segment", **costly())) for _ in range(2)]
            await asyncio.sleep(3)  # both held their slot past their deadline
            async with asyncio.timeout(15):  # a normal request gets a slot: the renderings stopped
                normal = await http.post("/segment", **segment_files("rle"))
            return list(await asyncio.gather(*stuck)), normal

    stuck, normal = asyncio.run(scenario())
    for response in stuck:
        assert_error(response, 504, "deadline_exceeded")
    assert normal.status_code == 200, normal.text


def test_render_concurrency_setting_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("INSID3_RENDER_CONCURRENCY", "5")
    assert Settings().render_concurrency == 5
    monkeypatch.setenv("INSID3_RENDER_CONCURRENCY", "0")
    with pytest.raises(ValueError):
        Settings()


def test_repeated_single_valued_fields_are_422_naming_the_field():
    async def scenario() -> list[httpx.Response]:
        async with in_process(create_app(settings(), FakeBackend(references=[RECORD]))) as http:
            target = ("target", ("t.png", TARGET.png, "image/png"))
            return [
                await http.post("/segment", files=[target], data={"reference_ids": "a", "format": ["png", "rle"]}),
                await http.post("/segment", files=[target], data={"reference_ids": "a", "tau": ["0.5", "0.6"]}),
                await http.post("/match", files=[target, target], data={"reference_id": "a", "points": "[[1, 2]]"}),
                await http.post("/match", files=[target], data={"reference_id": "a", "points": ["[[1, 2]]"] * 2}),
                await http.post("/references", files=[("image", ("i", b"x")), ("mask", ("m", b"x"))],
                                data={"name": ["a", "b"]}),
                await http.post("/references", files=[("image", ("i", b"x")), ("image", ("j", b"y")),
                                                      ("mask", ("m", b"x"))]),
                await http.get("/references?offset=0&offset=5"),
            ]

    responses = asyncio.run(scenario())
    for response, field in zip(responses, ["format", "tau", "target", "points", "name", "image", "offset"],
                               strict=True):
        body = assert_error(response, 422, "validation_error")
        assert field in body["detail"] and "2 times" in body["detail"], body
        assert [error["loc"][-1] for error in body["errors"]] == [field]


def test_repeatable_fields_may_repeat():
    async def scenario() -> httpx.Response:
        async with in_process(create_app(settings(), FakeBackend(references=[RECORD]))) as http:
            files = [("target", ("a.png", TARGET.png, "image/png")), ("target", ("b.png", TARGET.png, "image/png"))]
            ids = [RECORD.reference_id, RECORD.reference_id]  # one reference twice: a 2-shot request
            return await http.post("/segment", files=files, data={"reference_ids": ids})

    response = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2


def test_deeply_nested_points_are_422():
    async def scenario() -> httpx.Response:
        async with in_process(create_app(settings(), FakeBackend(references=[RECORD]))) as http:
            return await http.post("/match", files={"target": ("t.png", TARGET.png, "image/png")},
                                   data={"reference_id": "a", "points": "[" * 100_000 + "]" * 100_000})

    body = assert_error(asyncio.run(scenario()), 422, "invalid_input")
    assert "points" in body["detail"]

