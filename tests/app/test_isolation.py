"""One request can't hurt another (embedded mode, the real engine on the tiny random checkpoint):
a poison image fails alone, a disconnected client's queued jobs are dropped unrun, and a request
that fails validation does no engine work and stores nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from app.backends.embedded import EmbeddedBackend
from app.main import create_app
from app.settings import Settings
from tests.app.conftest import IMAGE_SIZE
from tests.support.api import assert_error, reference_id
from tests.support.images import REFERENCE, REFERENCE_2, TARGET, encode, undecodable_dds
from tests.support.live_server import Gate, LiveServer
from tests.support.metrics import metric
from tests.support.net import eventually

MAX_BATCH = 9  # the 8 well-formed requests and the poison one fit in one batch
MAX_QUEUE = 64
ENCODER_PASSES = "insid3_encoder_seconds_count"


@dataclass
class Engine:
    url: str
    gate: Gate

    def depth(self) -> float:
        return metric(self.url, "insid3_queue_depth")

    def stored(self) -> int:
        return httpx.get(f"{self.url}/references", timeout=30).json()["total"]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint, tmp_path_factory) -> Iterator[Engine]:
    settings = Settings(
        model_size="tiny", weights=str(tiny_checkpoint), image_size=IMAGE_SIZE, device="cpu",
        basis_cache_dir=tmp_path_factory.mktemp("basis"), max_batch=MAX_BATCH, max_wait_ms=5,
        max_queue=MAX_QUEUE, reference_dir=None,
    )
    backend = EmbeddedBackend(settings)
    live = LiveServer(create_app(settings, backend)).start(ready_path="/readyz")
    batcher = backend._batcher
    gate = Gate(batcher._run_batch)
    batcher._run_batch = gate
    yield Engine(live.url, gate)
    live.stop()


@pytest.fixture(scope="module")
def served_ref_id(engine) -> str:
    with httpx.Client(base_url=engine.url, timeout=120) as http:
        return reference_id(http, REFERENCE)


async def post_segment(http: httpx.AsyncClient, targets: list[bytes], served_ref_id: str) -> httpx.Response:
    files = [("target", (f"t{i}", data, "application/octet-stream")) for i, data in enumerate(targets)]
    return await http.post("/segment", files=files, data={"reference_ids": served_ref_id})


async def hold_engine(engine: Engine, http: httpx.AsyncClient, served_ref_id: str) -> asyncio.Task[httpx.Response]:
    """A one-target request whose batch is held in the engine thread until ``engine.gate.open()``."""
    engine.gate.close()
    running = asyncio.create_task(post_segment(http, [TARGET.png], served_ref_id))
    await asyncio.to_thread(engine.gate.entered.wait, 120)
    return running


@pytest.fixture(scope="module")
def poison_round(engine, served_ref_id) -> tuple[list[httpx.Response], list[int]]:
    """8 well-formed requests and 1 with a poison image, queued together behind a held batch,
    then run as one batch: their responses (poison last) and the batch sizes run meanwhile."""
    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=engine.url, timeout=120) as http:
            running = await hold_engine(engine, http, served_ref_id)
            requests = [asyncio.create_task(post_segment(http, [TARGET.png], served_ref_id)) for _ in range(8)]
            requests.append(asyncio.create_task(post_segment(http, [undecodable_dds()], served_ref_id)))
            await asyncio.to_thread(eventually, lambda: engine.depth() == MAX_BATCH)
            first = len(engine.gate.batches)
            engine.gate.open()
            assert (await running).status_code == 200
            responses = list(await asyncio.gather(*requests))
            return responses, engine.gate.batches[first:]

    return asyncio.run(scenario())


def test_a_poison_image_does_not_fail_its_batch_mates(poison_round):
    responses, batches = poison_round
    assert batches == [1, MAX_BATCH]  # the held request, then all nine in one batch
    assert [response.status_code for response in responses[:8]] == [200] * 8
    assert all(len(response.json()["results"]) == 1 for response in responses[:8])
    assert responses[8].status_code != 200


def test_a_poison_image_is_415(poison_round):
    responses, _ = poison_round
    assert_error(responses[8], 415, "invalid_image")


def test_queued_jobs_of_disconnected_clients_are_dropped_unrun(engine, served_ref_id):
    async def scenario() -> tuple[httpx.Response, httpx.Response, float, float, list[int]]:
        async with httpx.AsyncClient(base_url=engine.url, timeout=120) as http:
            running = await hold_engine(engine, http, served_ref_id)
            abandoned = [asyncio.create_task(post_segment(http, [TARGET.png] * 8, served_ref_id)) for _ in range(8)]
            await asyncio.to_thread(eventually, lambda: engine.depth() == MAX_QUEUE)
            passes = await asyncio.to_thread(metric, engine.url, ENCODER_PASSES)
            gone = await asyncio.to_thread(metric, engine.url, "insid3_http_requests_total", {"status": "499"})
            for request in abandoned:
                request.cancel()  # the clients hang up
            await asyncio.gather(*abandoned, return_exceptions=True)
            await asyncio.to_thread(eventually, lambda: engine.depth() == 0)
            first = len(engine.gate.batches)
            engine.gate.open()
            held = await running
            after = await post_segment(http, [TARGET.png], served_ref_id)  # queued behind anything left
            passes = await asyncio.to_thread(metric, engine.url, ENCODER_PASSES) - passes
            gone = await asyncio.to_thread(metric, engine.url, "insid3_http_requests_total", {"status": "499"}) - gone
            return held, after, passes, gone, engine.gate.batches[first:]

    held, after, passes, gone, batches = asyncio.run(scenario())
    assert held.status_code == 200 and after.status_code == 200
    assert batches == [1, 1]  # the batch that was running, then the new request: none of the 64
    assert passes == 2  # one encoder pass per image on the CPU: nothing for the 64 abandoned jobs
    assert gone == 8


def pair_files(pairs: list[tuple[bytes, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [file for image, mask in pairs for file in (("reference_image", ("r.png", image, "image/png")),
                                                       ("reference_mask", ("m.png", mask, "image/png")))]


def distinct_pairs(count: int) -> list[tuple[bytes, bytes]]:
    """``count`` different inline references (ids are content hashes)."""
    rng = np.random.default_rng(7)
    images = [(rng.random((40, 40, 3)) * 255).astype(np.uint8) for _ in range(count)]
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[10:30, 10:30] = 255
    return [(encode(image), encode(mask)) for image in images]


@pytest.mark.parametrize("count", [17, 70])
def test_too_many_inline_pairs_are_422_before_any_work(engine, count):
    runs, stored = len(engine.gate.batches), engine.stored()
    files = [("target", ("t.png", TARGET.png, "image/png")), *pair_files(distinct_pairs(count))]
    response = httpx.post(f"{engine.url}/segment", files=files, timeout=120)
    body = assert_error(response, 422, "invalid_input")
    assert "INSID3_MAX_SHOTS" in body["detail"]
    assert len(engine.gate.batches) == runs and engine.stored() == stored


def test_unknown_reference_id_is_404_before_encoding_inline_pairs(engine):
    runs, stored = len(engine.gate.batches), engine.stored()
    files = [("target", ("t.png", TARGET.png, "image/png")), *pair_files(distinct_pairs(2))]
    response = httpx.post(f"{engine.url}/segment", files=files, data={"reference_ids": "f" * 32}, timeout=120)
    assert_error(response, 404, "reference_not_found")
    assert len(engine.gate.batches) == runs and engine.stored() == stored


def test_a_failed_request_leaves_none_of_its_inline_references(engine):
    stored = engine.stored()
    empty_mask = encode(np.zeros((40, 40), dtype=np.uint8))
    [good] = distinct_pairs(1)
    files = [("target", ("t.png", TARGET.png, "image/png")), *pair_files([good, (good[0], empty_mask)])]
    response = httpx.post(f"{engine.url}/segment", files=files, timeout=120)
    assert_error(response, 422, "empty_mask")
    assert engine.stored() == stored


def test_a_full_queue_leaves_none_of_the_inline_references(engine, served_ref_id):
    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=engine.url, timeout=120) as http:
            running = await hold_engine(engine, http, served_ref_id)
            fillers = [asyncio.create_task(post_segment(http, [TARGET.png] * 16, served_ref_id)) for _ in range(3)]
            fillers.append(asyncio.create_task(post_segment(http, [TARGET.png] * 15, served_ref_id)))
            await asyncio.to_thread(eventually, lambda: engine.depth() == MAX_QUEUE - 1)
            files = [("target", ("t.png", TARGET.png, "image/png")), *pair_files(distinct_pairs(2))]
            inline = asyncio.create_task(http.post("/segment", files=files))
            await asyncio.to_thread(eventually, lambda: engine.depth() == MAX_QUEUE)  # one pair queued, one refused
            engine.gate.open()
            assert [r.status_code for r in [await running, *await asyncio.gather(*fillers)]] == [200] * 5
            return await inline

    stored = engine.stored()
    assert_error(asyncio.run(scenario()), 503, "queue_full")
    assert engine.stored() == stored


def test_match_with_an_inline_reference_that_fails_stores_nothing(engine):
    stored = engine.stored()
    files = {"target": ("t.png", TARGET.png, "image/png"), "reference_image": ("r.png", REFERENCE_2.png, "image/png")}
    response = httpx.post(f"{engine.url}/match", files=files, data={"points": "[[5000, 10]]"}, timeout=120)
    body = assert_error(response, 422, "invalid_input")
    assert "outside" in body["detail"]
    assert engine.stored() == stored
