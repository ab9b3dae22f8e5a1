"""Chaos benchmark: closed-loop load on ``POST /segment`` (Redis mode) while a fault schedule kills,
pauses and restarts the pool's processes; prints what every request got and how fast the pool healed.

``insid3 serve --redis-url`` with default settings and ``--workers`` ``insid3 worker``s (a random
tiny checkpoint on the CPU, default liveness settings) on a ``redis-server`` with an append-only
file (a restart keeps the stream and the references, as in ``deploy/redis/redis.conf``).
``--clients`` clients each send a 1-shot request (``X-Request-Timeout: 30``) as soon as the previous
one is answered, for ``--seconds``. The fault schedule, at fractions of the run:

* 15 %: ``kill -9`` worker 0; it is restarted 2 s later (a new process: it loads the model again)
* 40 %: ``SIGSTOP`` worker 1 for 8 s, then ``SIGCONT``
* 70 %: ``redis-server`` stopped (SIGTERM) and restarted 1 s later

A request is *lost* when it gets no answer, a 5xx other than 503, or a 504; a 503 is a clear refusal
(Redis down) that a client retries. Recovery time of a fault: from the fault to the first 200 of a
request sent after it.

    .venv/bin/python bench/bench_chaos.py [--seconds 60] [--clients 16] [--workers 3] [--image-size 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from scenes import disc_scene, free_port, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    sent_at: float
    done_at: float
    status: int  # 0: no answer (transport error or client timeout)
    reason: str = ""  # the error's detail, for refusals


@dataclass
class Pool:
    """The processes under test."""

    workdir: Path
    weights: Path
    image_size: int
    redis_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    redis: subprocess.Popen[bytes] | None = None

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "INSID3_LOG_LEVEL": "warning",
               "INSID3_BASIS_CACHE_DIR": str(self.workdir / "basis")}
        with (self.workdir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(args, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)

    def start_redis(self) -> None:
        self.redis = self._spawn("redis", [shutil.which("redis-server") or "redis-server", "--port",
                                           str(self.redis_port), "--save", "", "--appendonly", "yes",
                                           "--appendfsync", "everysec", "--dir", str(self.workdir)])

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.send_signal(signal.SIGTERM)
        self.redis.wait(timeout=30)

    def engine(self) -> list[str]:
        return ["--model-size", "tiny", "--weights", str(self.weights), "--image-size", str(self.image_size),
                "--device", "cpu"]

    def start_worker(self, index: int) -> None:
        self.workers[index] = self._spawn(f"worker{index}", [
            sys.executable, "-m", "insid3", "worker", "--redis-url", self.redis_url, *self.engine(),
            "--name", f"chaos-{index}-{time.monotonic_ns()}"])

    def start_api(self) -> None:
        self.others.append(self._spawn("api", [sys.executable, "-m", "insid3", "serve", "--redis-url",
                                               self.redis_url, "--port", str(self.api_port), *self.engine()]))

    def exits(self) -> int:
        """Processes that exited on their own (not killed by the schedule)."""
        return sum(p.poll() is not None for p in [*self.workers.values(), *self.others])

    def close(self) -> None:
        for process in [*self.others, *self.workers.values()]:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in [*self.others, *self.workers.values()]:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.redis is not None and self.redis.poll() is None:
            self.stop_redis()


async def client_loop(url: str, form: dict[str, object], stop_at: float, outcomes: list[Outcome]) -> None:
    async with httpx.AsyncClient(timeout=40) as client:
        while time.monotonic() < stop_at:
            sent, reason = time.monotonic(), ""
            try:
                response = await client.post(f"{url}/segment", headers={"X-Request-Timeout": "30"}, **form)
                status = response.status_code
                if status != 200:
                    reason = str(response.json().get("detail", ""))[:60]
            except (httpx.HTTPError, ValueError):
                status = 0
            outcomes.append(Outcome(sent, time.monotonic(), status, reason))
            if status == 503:
                await asyncio.sleep(0.2)  # a clear refusal: back off a little, as a client would


async def schedule(pool: Pool, start: float, seconds: float, faults: dict[str, float]) -> None:
    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, start + fraction * seconds - time.monotonic()))

    await at(0.15)
    faults["kill -9 worker 0"] = time.monotonic()
    pool.workers[0].kill()
    pool.workers[0].wait()
    await asyncio.sleep(2)
    pool.start_worker(0)
    await at(0.40)
    faults["SIGSTOP worker 1 (8 s)"] = time.monotonic()
    pool.workers[1].send_signal(signal.SIGSTOP)
    await asyncio.sleep(8)
    pool.workers[1].send_signal(signal.SIGCONT)
    await at(0.70)
    faults["restart redis-server"] = time.monotonic()
    await asyncio.to_thread(pool.stop_redis)
    await asyncio.sleep(1)
    pool.start_redis()


def report(outcomes: list[Outcome], faults: dict[str, float], exits: int) -> None:
    statuses = Counter(o.status for o in outcomes)
    ok = sorted(1000 * (o.done_at - o.sent_at) for o in outcomes if o.status == 200)
    lost = sum(n for status, n in statuses.items() if status == 0 or status == 504 or (status >= 500 and status != 503))
    print(f"requests sent: {len(outcomes)}")
    print(f"answered 200: {statuses[200]}")
    print("failed by status: " + (", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(statuses.items())
                                             if s != 200) or "none"))
    for reason, n in Counter(o.reason for o in outcomes if o.status != 200).most_common(5):
        print(f"  {n} x {reason}")
    if ok:
        p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))]
        print(f"latency of 200s: p50 {statistics.median(ok):.0f} ms, p99 {p99:.0f} ms")
    for name, at in faults.items():
        after = [o.done_at for o in outcomes if o.status == 200 and o.sent_at >= at]
        print(f"recovery after {name}: " + (f"{min(after) - at:.1f} s" if after else "never"))
    print(f"requests lost (no answer, 504 or 5xx other than 503): {lost}")
    print(f"processes that exited on their own: {exits}")


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    from core.checkpoint import make_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        pool = Pool(Path(tmp), Path(tmp) / "tiny.pth", args.image_size)
        make_checkpoint("tiny", pool.weights, seed=0)
        try:
            pool.start_redis()
            for index in range(args.workers):
                pool.start_worker(index)
            pool.start_api()
            url = f"http://127.0.0.1:{pool.api_port}"
            if not wait_ready(url):
                raise RuntimeError("the API did not become ready")
            image, mask = disc_scene(1, 240, 320)
            target, _ = disc_scene(2, 240, 320)
            created = httpx.post(f"{url}/references", files={"image": image, "mask": mask}, timeout=120)
            created.raise_for_status()
            form = {"files": {"target": target}, "data": {"reference_ids": created.json()["reference_id"]}}
            outcomes: list[Outcome] = []
            faults: dict[str, float] = {}

            async def run() -> None:
                start = time.monotonic()
                await asyncio.gather(schedule(pool, start, args.seconds, faults), *(
                    client_loop(url, form, start + args.seconds, outcomes) for _ in range(args.clients)))

            print(f"closed loop: {args.clients} clients, {args.seconds:g} s, {args.workers} workers (tiny, "
                  f"{args.image_size} px, CPU), default liveness settings")
            asyncio.run(run())
            report(outcomes, faults, pool.exits())
        finally:
            pool.close()


if __name__ == "__main__":
    main()
