"""Two `insid3 serve --redis-url` processes and two `insid3 worker` processes on one redis-server:
shared references, the backlog bound, deadlines, a Redis restart, SIGTERM draining."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from tests.support.images import small_scene
from tests.support.metrics import scrape
from tests.support.net import eventually, free_port
from tests.support.processes import Process
from tests.support.redis_server import RedisServer
from tests.workers.conftest import database_url
from tests.workers.helpers import Launcher
from workers.keys import DEFAULT_KEYS, GROUP

MAX_QUEUE = 4  # the second API's backlog bound
MAX_BATCH = 4


class Service:
    """The processes of this module and their ports."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        self.api_ports = [free_port(), free_port()]
        self.metrics_ports = {"a": free_port(), "b": free_port()}
        options = ("--max-batch", str(MAX_BATCH), "--max-wait-ms", "20", "--visibility-timeout-s", "10")
        self.workers = {name: launcher.worker(name, port, *options, wait=False)
                        for name, port in self.metrics_ports.items()}
        self.apis = [launcher.api(self.api_ports[0], wait=False),
                     launcher.api(self.api_ports[1], wait=False, INSID3_MAX_QUEUE=str(MAX_QUEUE))]
        for name, process in self.workers.items():
            launcher.wait_worker(name, process)
        for port, process in zip(self.api_ports, self.apis, strict=True):
            launcher.wait_api(port, process)

    def url(self, api: int) -> str:
        return f"http://127.0.0.1:{self.api_ports[api]}"

    def client(self, api: int) -> httpx.Client:
        return httpx.Client(base_url=self.url(api), timeout=60)

    def wait_ready(self) -> None:
        for port, process in zip(self.api_ports, self.apis, strict=True):
            self.launcher.wait_api(port, process)


@pytest.fixture(scope="module")
def service(redis_server: RedisServer, tiny_checkpoint: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """On the session's own redis-server (not INSID3_TEST_REDIS_URL): a test restarts it."""
    launcher = Launcher(database_url(redis_server.url), tiny_checkpoint, tmp_path_factory.mktemp("logs"))
    try:
        yield Service(launcher)
    finally:
        launcher.close()



def model_stream(redis: Redis) -> str:
    """The job stream of the model the workers serve."""
    [model] = redis.smembers(DEFAULT_KEYS.models)
    return DEFAULT_KEYS.for_model(model.decode()).stream

def create_reference(client: httpx.Client, seed: int = 0) -> httpx.Response:
    scene = small_scene(seed)
    return client.post("/references", files={"image": ("ref.png", scene.png), "mask": ("m.png", scene.mask_png)})


def segment_form(reference_id: str, seed: int = 50) -> dict[str, object]:
    return {"files": {"target": ("t.png", small_scene(seed).png)}, "data": {"reference_ids": reference_id}}


async def segment_concurrently(urls: list[str], reference_id: str, count: int,
                               headers: dict[str, str] | None = None) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return list(await asyncio.gather(*(
            client.post(f"{urls[i % len(urls)]}/segment", headers=headers, **segment_form(reference_id))
            for i in range(count))))


def test_references_are_shared_by_every_api_and_worker(service: Service) -> None:
    with service.client(0) as api1, service.client(1) as api2:
        created = create_reference(api1)
        assert created.status_code == 201, created.text
        info = created.json()
        again = create_reference(api2)
        assert again.status_code == 200 and again.json()["reference_id"] == info["reference_id"]
        assert api2.get(f"/references/{info['reference_id']}").json() == again.json()
        assert [item["reference_id"] for item in api2.get("/references").json()["items"]] == [info["reference_id"]]

        before = {name: scrape(port) for name, port in service.metrics_ports.items()}
        responses = asyncio.run(segment_concurrently([service.url(0)], info["reference_id"], 12))
        responses.append(api2.post("/segment", **segment_form(info["reference_id"])))
        assert [r.status_code for r in responses] == [200] * 13
        assert len({str(r.json()["results"][0]["rle"]) for r in responses}) == 1  # same target, same mask
        processed = 'insid3_worker_jobs_total{outcome="processed"}'
        for name, port in service.metrics_ports.items():
            assert scrape(port)[processed] > before[name][processed], f"worker {name} served nothing"

        assert api2.delete(f"/references/{info['reference_id']}").status_code == 204
        assert api1.get(f"/references/{info['reference_id']}").status_code == 404
        missing = api1.post("/segment", **segment_form(info["reference_id"]))
        assert missing.status_code == 404 and missing.json()["error"] == "reference_not_found"


def test_backlog_bound_gives_503_with_retry_after_and_deadlines_504(service: Service) -> None:
    with service.client(0) as api1:
        reference_id = create_reference(api1, seed=1).json()["reference_id"]
    redis = service.launcher.redis
    stream = model_stream(redis)
    expired_before = {name: scrape(port) for name, port in service.metrics_ports.items()}
    for process in service.workers.values():  # each stopped worker holds at most one blocked read
        process.send(signal.SIGSTOP)
    try:
        with service.client(1) as api2:
            timed_out = api2.post("/segment", headers={"X-Request-Timeout": "1"}, **segment_form(reference_id))
        assert timed_out.status_code == 504 and timed_out.json()["error"] == "deadline_exceeded"
        length_before = redis.xlen(stream)
        count = 2 * MAX_BATCH + MAX_QUEUE + 4

        async def flood() -> list[httpx.Response]:
            tasks = [asyncio.create_task(coroutine) for coroutine in (
                segment_concurrently([service.url(1)], reference_id, 1) for _ in range(count))]
            # once every request is either answered (refused) or queued, let the workers go
            while sum(task.done() for task in tasks) + redis.xlen(stream) - length_before < count:
                await asyncio.sleep(0.02)
            for process in service.workers.values():
                process.send(signal.SIGCONT)
            return [response for task in tasks for response in await task]

        responses = asyncio.run(flood())
    finally:
        for process in service.workers.values():
            process.send(signal.SIGCONT)
    refused = [r for r in responses if r.status_code == 503]
    accepted = [r for r in responses if r.status_code == 200]
    assert len(refused) + len(accepted) == count
    assert len(accepted) <= 2 * MAX_BATCH + MAX_QUEUE  # the bound held
    assert len(refused) >= count - 2 * MAX_BATCH - MAX_QUEUE
    for response in refused:
        assert response.json()["error"] == "queue_full" and response.headers["Retry-After"] == "1"
    expired = 'insid3_worker_jobs_total{outcome="expired"}'
    eventually(lambda: sum(scrape(port)[expired] - expired_before[name][expired]
                           for name, port in service.metrics_ports.items()) == 1,
               what="the job of the timed-out request to be skipped")


def test_redis_restart_mid_run(service: Service, redis_server: RedisServer) -> None:
    with service.client(0) as api1, service.client(1) as api2:
        reference_id = create_reference(api1, seed=2).json()["reference_id"]
        assert api2.post("/segment", **segment_form(reference_id)).status_code == 200

        async def in_flight_then_stop() -> list[httpx.Response]:
            requests = asyncio.gather(*(asyncio.create_task(
                segment_concurrently([service.url(i % 2)], reference_id, 1)) for i in range(6)))
            await asyncio.sleep(0.05)
            await asyncio.to_thread(redis_server.stop)
            return [response for batch in await requests for response in batch]

        in_flight = asyncio.run(in_flight_then_stop())
        assert {r.status_code for r in in_flight} <= {200, 503}  # answered or refused, never hung
        during = [api1.post("/segment", **segment_form(reference_id)), create_reference(api2, seed=3),
                  api1.get(f"/references/{reference_id}"), api2.get("/references"), api1.get("/readyz")]
        assert [r.status_code for r in during] == [503] * 5
        assert all(r.json()["error"] == "model_unavailable" for r in during)
        assert api1.get("/healthz").status_code == 200

        redis_server.start()  # empty: nothing was persisted
        service.wait_ready()
        recreated = create_reference(api2, seed=2)
        assert recreated.status_code == 201 and recreated.json()["reference_id"] == reference_id
        for api in (api1, api2):
            assert api.post("/segment", **segment_form(reference_id)).status_code == 200


def test_sigterm_drains_the_current_batch(service: Service) -> None:
    with service.client(0) as api1:
        reference_id = create_reference(api1, seed=4).json()["reference_id"]
    redis = service.launcher.redis
    worker_a: Process = service.workers["a"]
    stream = model_stream(redis)

    def holding() -> bool:
        return bool(redis.xpending_range(stream, GROUP, "-", "+", 100, consumername="a"))

    async def requests_during_drain() -> tuple[list[httpx.Response], int]:
        service.workers["b"].send(signal.SIGSTOP)  # every job goes to a: it surely holds some when told to drain
        try:
            requests = asyncio.create_task(segment_concurrently([service.url(0)], reference_id, 16))
            await asyncio.to_thread(eventually, holding, 30, "worker a to hold jobs", 0.002)
            worker_a.send(signal.SIGTERM)
            code = await asyncio.to_thread(worker_a.popen.wait, 60)
        finally:
            service.workers["b"].send(signal.SIGCONT)  # b answers what a left (or reclaimed from b)
        return await requests, code

    responses, code = asyncio.run(requests_during_drain())
    assert code == 0
    assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses]  # drained, answered
    assert not redis.xpending_range(stream, GROUP, "-", "+", 100, consumername="a")
    assert "a" not in {c["name"].decode() for c in redis.xinfo_consumers(stream, GROUP)}
    assert service.workers["b"].stop() == 0
