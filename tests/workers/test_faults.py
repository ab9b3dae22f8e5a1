"""Keep-nothing-lost: `insid3 serve --redis-url` and two `insid3 worker`s with default liveness
settings on a real redis-server, under the faults the pool exists to absorb: a worker killed or
paused mid-load, Redis at maxmemory, the reference budget full, a corrupt reference blob, a worker
of another model in the pool, the API killed with jobs queued. Counts are asserted, never times."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import scan_bomb, small_scene
from tests.support.metrics import scrape
from tests.support.net import eventually, free_port
from tests.support.redis_server import RedisServer
from tests.workers.conftest import database_url
from tests.workers.helpers import IMAGE_SIZE, Launcher, queue_cli, run_with_backend
from workers.keys import DEFAULT_KEYS, GROUP, inbox_alive

BURST = 16
# Default liveness settings; a batching window long enough that a worker visibly holds the jobs of a
# batch while it fills (a fast encoder would otherwise answer between two looks at the pending list).
WORKER_OPTIONS = ("--max-batch", "4", "--max-wait-ms", "200")


class Pool:
    """An API process and two workers (default liveness settings) of this module."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        self.port = free_port()
        self.metrics = {"w1": free_port(), "w2": free_port()}
        self.workers = {name: launcher.worker(name, port, *WORKER_OPTIONS, wait=False)
                        for name, port in self.metrics.items()}
        self.api = launcher.api(self.port, wait=False)
        for name, process in self.workers.items():
            launcher.wait_worker(name, process)
        launcher.wait_api(self.port, self.api)
        self.url = f"http://127.0.0.1:{self.port}"
        self.reference_id = self.create_reference(0).json()["reference_id"]

    def create_reference(self, seed: int) -> httpx.Response:
        scene = small_scene(seed)
        return httpx.post(f"{self.url}/references", timeout=60,
                          files={"image": ("r.png", scene.png), "mask": ("m.png", scene.mask_png)})

    def segment(self, count: int, timeout_s: float = 30.0, references: list[str] | None = None) -> list[httpx.Response]:
        """``count`` concurrent /segment requests, the i-th with ``references[i % len]`` (default: the stored one)."""
        references = references or [self.reference_id]

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=timeout_s + 30) as client:
                return list(await asyncio.gather(*(
                    client.post(f"{self.url}/segment", headers={"X-Request-Timeout": str(timeout_s)},
                                files={"target": ("t.png", small_scene(100 + i).png)},
                                data={"reference_ids": references[i % len(references)]})
                    for i in range(count))))

        return asyncio.run(burst())

    def stream(self) -> str:
        [model] = [m.decode() for m in self.launcher.redis.smembers(DEFAULT_KEYS.models)
                   if m.decode().endswith(f"@{IMAGE_SIZE}")]
        return DEFAULT_KEYS.for_model(model).stream

    def pending_of(self, name: str) -> int:
        try:
            return len(self.launcher.redis.xpending_range(self.stream(), GROUP, "-", "+", 100, consumername=name))
        except ValueError:
            return 0

    def processed(self) -> float:
        """Jobs answered with a result, over the live workers (an answer not delivered is not counted)."""
        return sum(scrape(port).get('insid3_worker_jobs_total{outcome="processed"}', 0.0)
                   for name, port in self.metrics.items() if self.workers[name].alive())

    def replace_worker(self, old: str) -> None:
        """Start a fresh worker in place of a dead one."""
        name = f"{old}x"
        self.metrics[name] = free_port()
        self.workers[name] = self.launcher.worker(name, self.metrics[name], *WORKER_OPTIONS)
        del self.metrics[old]

    def all_alive(self) -> bool:
        return self.api.alive() and all(p.alive() for n, p in self.workers.items() if n in self.metrics)


@pytest.fixture(scope="module")
def pool(redis_server: RedisServer, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    launcher = Launcher(database_url(redis_server.url), tiny_checkpoint, tmp_path_factory.mktemp("logs"))
    try:
        yield Pool(launcher)
    finally:
        launcher.redis.config_set("maxmemory", 0)
        launcher.close()


def kill_when_holding(pool: Pool, name: str, signum: int) -> float:
    """Send ``signum`` to worker ``name`` once it holds unanswered jobs; returns when (monotonic)."""
    eventually(lambda: pool.pending_of(name) > 0, 30, f"worker {name} to hold jobs", interval_s=0.002)
    os.kill(pool.workers[name].pid, signum)
    return time.monotonic()


def burst_with_fault(pool: Pool, name: str, signum: int, timeout_s: float = 30.0) -> tuple[list[httpx.Response], float]:
    async def main() -> tuple[list[httpx.Response], float]:
        burst = asyncio.create_task(asyncio.to_thread(pool.segment, BURST, timeout_s))
        at = await asyncio.to_thread(kill_when_holding, pool, name, signum)
        return await burst, at

    return asyncio.run(main())


def test_kill_9_of_a_worker_mid_burst_loses_no_request(pool: Pool) -> None:
    responses, _ = burst_with_fault(pool, "w1", signal.SIGKILL)
    pool.workers["w1"].popen.wait()
    assert [r.status_code for r in responses] == [200] * BURST
    pool.replace_worker("w1")
    assert pool.all_alive()


def test_sigstop_beyond_the_deadline_then_sigcont_answers_every_request_once(pool: Pool) -> None:
    before = pool.processed()
    name = next(n for n in pool.metrics if n != "w2")
    responses, stopped_at = burst_with_fault(pool, name, signal.SIGSTOP, timeout_s=8)
    time.sleep(max(0.0, stopped_at + 8.5 - time.monotonic()))  # paused for longer than the requests' deadline (8 s)
    os.kill(pool.workers[name].pid, signal.SIGCONT)
    assert [r.status_code for r in responses] == [200] * BURST
    eventually(lambda: pool.pending_of(name) == 0, 30, "the resumed worker to settle")
    assert pool.processed() - before == BURST  # exactly one answer per request (XACK-guarded)
    assert pool.all_alive()


def test_a_corrupt_reference_blob_is_a_410_and_no_process_exits(pool: Pool) -> None:
    created = pool.create_reference(7).json()
    record = httpx.get(f"{pool.url}/references/{created['reference_id']}").json()
    corrupt = "f" * 64
    info = json.dumps({**{k: record[k] for k in ("name", "width", "height", "mask_area", "model", "image_size",
                                                   "created_at", "expires_at")}, "reference_id": corrupt})
    pool.launcher.redis.hset(DEFAULT_KEYS.reference(corrupt), mapping={"features": b"garbage", "info": info})
    statuses = []
    for _ in range(2):  # the first request finds the blob corrupt and drops it: every worker agrees
        response = httpx.post(f"{pool.url}/segment", timeout=60, files={"target": ("t.png", small_scene(3).png)},
                              data={"reference_ids": corrupt})
        statuses.append((response.status_code, response.json()["error"]))
    assert statuses == [(410, "reference_corrupt"), (404, "reference_not_found")]
    assert pool.all_alive()


def test_a_full_reference_budget_refuses_new_references_only(pool: Pool) -> None:
    budget = pool.launcher.redis
    used = int(budget.hget(DEFAULT_KEYS.references_bytes, "total") or 0)
    budget.hincrby(DEFAULT_KEYS.references_bytes, "total", (2 << 30) - used)  # the default budget, used up
    try:
        refused = pool.create_reference(8)
        assert refused.status_code == 507 and refused.json()["error"] == "reference_storage_full"
        assert [r.status_code for r in pool.segment(4)] == [200] * 4
    finally:
        budget.hincrby(DEFAULT_KEYS.references_bytes, "total", used - (2 << 30))
    assert pool.create_reference(8).status_code == 201
    assert pool.all_alive()


def test_redis_at_maxmemory_is_a_503_with_the_reason_and_heals_by_itself(pool: Pool) -> None:
    redis = pool.launcher.redis
    redis.config_set("maxmemory", int(redis.info("memory")["used_memory"]) // 2)
    try:
        refused = pool.segment(2)
        assert [r.status_code for r in refused] == [503, 503]
        assert all("memory" in r.json()["detail"] or "no worker" in r.json()["detail"] for r in refused)
        assert pool.create_reference(9).status_code == 503
    finally:
        redis.config_set("maxmemory", 0)
    eventually(lambda: httpx.get(f"{pool.url}/readyz").status_code == 200, 10, "readiness to recover")
    assert [r.status_code for r in pool.segment(2)] == [200, 200]
    assert pool.all_alive()


def test_a_scan_bomb_in_flight_does_not_hold_the_next_request(pool: Pool) -> None:
    async def requests() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            bomb = asyncio.create_task(client.post(
                f"{pool.url}/segment", headers={"X-Request-Timeout": "5"},
                files={"target": ("bomb.jpg", scan_bomb())}, data={"reference_ids": pool.reference_id}))
            await asyncio.sleep(6)
            normal = await client.post(f"{pool.url}/segment", timeout=10, files={"target": (
                "t.png", small_scene(500).png)}, data={"reference_ids": pool.reference_id})
            return await bomb, normal

    bomb, normal = asyncio.run(requests())
    assert normal.status_code == 200, normal.text
    assert bomb.status_code == 413 and "over the limit of 100 scans" in bomb.json()["detail"]
    assert pool.all_alive()


PROMPT = (200, 201, 503, 507)


def load_at_maxmemory(pool: Pool, seed: int) -> list[httpx.Response]:
    """Create 4 references and segment 4 targets; once the workers hold some of the jobs, Redis
    reaches maxmemory until every answer is in (within 10 s each, or httpx raises ReadTimeout)."""
    redis = pool.launcher.redis

    async def load() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10, headers={"X-Request-Timeout": "8"}) as client:
            scenes = [small_scene(seed + i) for i in range(4)]
            requests = [client.post(f"{pool.url}/references", files={
                "image": ("r.png", scene.png), "mask": ("m.png", scene.mask_png)}) for scene in scenes]
            requests += [client.post(f"{pool.url}/segment", data={"reference_ids": pool.reference_id},
                                     files={"target": ("t.png", scene.png)}) for scene in scenes]
            tasks = [asyncio.create_task(request) for request in requests]
            await asyncio.to_thread(eventually, lambda: sum(map(pool.pending_of, pool.metrics)) > 0, 30,
                                    "the workers to hold jobs", interval_s=0.002)
            redis.config_set("maxmemory", int(redis.info("memory")["used_memory"]) // 2)
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                redis.config_set("maxmemory", 0)

    return asyncio.run(load())


def test_maxmemory_mid_load_answers_every_request_promptly_five_times(pool: Pool) -> None:
    for round_ in range(5):
        answers = load_at_maxmemory(pool, 300 + 10 * round_)
        late = [(r.status_code, r.text[:150]) for r in answers if r.status_code not in PROMPT]
        assert not late  # an answer, or a prompt refusal with its reason: never a 504 or a 500
        assert all("memory" in r.json()["detail"] for r in answers if r.status_code == 503)
        assert pool.all_alive()
        eventually(lambda: httpx.get(f"{pool.url}/readyz").status_code == 200, 10, "readiness to recover")
    assert [r.status_code for r in pool.segment(2)] == [200, 200]


def test_a_worker_of_another_image_size_never_causes_a_409(pool: Pool, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    odd = pool.launcher.worker("odd", port, "--image-size", str(IMAGE_SIZE + 32))
    try:
        ids = [pool.reference_id] + [pool.create_reference(20 + i).json()["reference_id"] for i in range(3)]
        assert [response.status_code for response in pool.segment(36, references=ids)] == [200] * 36
        assert scrape(port)['insid3_worker_jobs_total{outcome="processed"}'] == 0  # it serves no job of ours
        assert len(httpx.get(f"{pool.url}/readyz").json()["models"]) == 2  # the mixed pool is visible
        assert "mixed pool: live workers serve 2 models" in queue_cli(pool.launcher, capsys, "stats")
    finally:
        odd.stop()
    assert pool.all_alive()


def test_a_k_shot_request_across_image_sizes_is_refused_before_it_is_queued(pool: Pool) -> None:
    odd_size = IMAGE_SIZE + 32
    odd = pool.launcher.worker("odd-k-shot", free_port(), "--image-size", str(odd_size))
    try:
        scene = small_scene(41)  # stored by the newest worker: the odd one
        info, _ = run_with_backend(pool.launcher.redis_url, lambda backend: backend.create_reference(
            scene.png, scene.mask_png, None, None, time.time() + 60))
        assert info.image_size == odd_size
        streams = [DEFAULT_KEYS.for_model(m.decode()).stream for m in pool.launcher.redis.smembers(DEFAULT_KEYS.models)]
        added = {stream: pool.launcher.redis.xinfo_stream(stream)["entries-added"] for stream in streams}
        response = httpx.post(f"{pool.url}/segment", timeout=60, files={"target": ("t.png", small_scene(42).png)},
                              data={"reference_ids": [pool.reference_id, info.reference_id]})
        assert response.status_code == 409 and response.json()["error"] == "incompatible_reference"
        assert f"at {IMAGE_SIZE}" in response.json()["detail"] and f"at {odd_size}" in response.json()["detail"]
        assert {stream: pool.launcher.redis.xinfo_stream(stream)["entries-added"] for stream in streams} == added
    finally:
        odd.stop()
    assert pool.all_alive()


def unfinished(pool: Pool) -> int:
    """Entries not yet acknowledged: not delivered (XINFO's lag is unknown after trimming) or pending
    (a worker blocked in XREADGROUP gets entries even while it is stopped)."""
    [group] = pool.launcher.redis.xinfo_groups(pool.stream())
    undelivered = pool.launcher.redis.xrange(pool.stream(), f"({group['last-delivered-id'].decode()}", "+")
    return len(undelivered) + int(group["pending"])


def test_the_jobs_of_a_killed_api_are_dropped_unrun(pool: Pool) -> None:
    port = free_port()
    doomed = pool.launcher.api(port)
    before = {name: scrape(p) for name, p in pool.metrics.items()}
    workers = [p for n, p in pool.workers.items() if n in pool.metrics]
    for worker in workers:
        worker.send(signal.SIGSTOP)
    try:
        async def burst() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                tasks = [asyncio.create_task(client.post(
                    f"http://127.0.0.1:{port}/segment", files={"target": ("t.png", small_scene(i).png)},
                    data={"reference_ids": pool.reference_id})) for i in range(BURST)]
                await asyncio.to_thread(eventually, lambda: unfinished(pool) >= BURST, 20, "the jobs to be queued")
                doomed.popen.kill()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(burst())
        live_inboxes = inbox_alive(DEFAULT_KEYS.inbox("*"))  # the pool's API's and, until it lapses, the killed one's
        eventually(lambda: len(list(pool.launcher.redis.scan_iter(match=live_inboxes))) == 1, 10,
                   "the killed API's inbox liveness to lapse (3 s)")
    finally:
        for worker in workers:
            worker.send(signal.SIGCONT)
    eventually(lambda: unfinished(pool) == 0, 30, "the queue to drain")
    after = {name: scrape(p) for name, p in pool.metrics.items()}
    abandoned = sum(after[n].get('insid3_worker_jobs_total{outcome="abandoned"}', 0)
                    - before[n].get('insid3_worker_jobs_total{outcome="abandoned"}', 0) for n in after)
    processed = sum(after[n].get('insid3_worker_jobs_total{outcome="processed"}', 0)
                    - before[n].get('insid3_worker_jobs_total{outcome="processed"}', 0) for n in after)
    assert (abandoned, processed) == (BURST, 0)
    assert pool.all_alive()


def test_inline_references_are_kept_only_briefly(pool: Pool) -> None:
    response = httpx.post(f"{pool.url}/segment", timeout=60, files={
        "target": ("t.png", small_scene(5).png), "reference_image": ("r.png", small_scene(77).png),
        "reference_mask": ("m.png", small_scene(77).mask_png)})
    assert response.status_code == 200
    [reference_id] = response.json()["reference_ids"]
    ttl_s = pool.launcher.redis.pttl(DEFAULT_KEYS.reference(reference_id)) / 1000
    assert 0 < ttl_s <= 300  # INSID3_INLINE_REFERENCE_TTL_S, not the 24 h of stored references
