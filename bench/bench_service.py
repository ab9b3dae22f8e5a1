"""Benchmark: closed-loop load on ``POST /segment`` in embedded mode versus Redis mode with 1 and
2 workers (``insid3 serve`` / ``insid3 worker`` / ``redis-server`` subprocesses, a random tiny
checkpoint on the CPU, one torch thread per engine).

Each level runs ``--concurrency`` clients that send a request as soon as their previous one is
answered (1-shot segmentation of a 320x240 PNG with a stored reference) for ``--seconds`` after a
warm-up. Engines are pinned with taskset: the embedded API and worker 1 on core 0, worker 2 on
core 1; the API processes, redis-server and this load generator run on the other cores (on a
2-core machine: on core 1, shared with worker 2, which caps the 2-worker speed-up). Both modes
batch with the same ``--max-batch`` and ``--max-wait-ms``; the API's backlog bound is
``--max-queue`` and the largest stream backlog seen is reported.

    .venv/bin/python bench/bench_service.py [--image-size 224] [--seconds 10] [--concurrency 1,4,16]
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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from scenes import disc_scene, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


def service_cores() -> set[int]:
    """Cores for the API processes, redis-server and the load generator: all but the engines' two,
    or the last one on a machine of 2 or 3 cores (shared with worker 2 on 2 cores)."""
    cores = os.cpu_count() or 1
    return set(range(2, cores)) if cores >= 4 else {cores - 1}


def _wait(url: str, what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready")


class Processes:
    """Child processes, pinned to cores where asked, all stopped on exit."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.children: list[subprocess.Popen[bytes]] = []
        self.cores = os.cpu_count() or 1
        self.service_cores = ",".join(map(str, sorted(service_cores())))

    def start(self, name: str, args: list[str], core: int | str | None, env: dict[str, str] | None = None) -> None:
        pin = [] if core is None or self.cores < 2 else ["taskset", "-c", str(core)]
        with (self.logs / f"{name}.log").open("wb") as log:
            self.children.append(subprocess.Popen(
                [*pin, *args], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(env or {})}))

    def insid3(self, name: str, args: list[str], core: int | str | None, env: dict[str, str] | None = None) -> None:
        self.start(name, [sys.executable, "-m", "insid3", *args], core, env)

    def close(self) -> None:
        for child in reversed(self.children):
            child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()


@dataclass
class Level:
    mode: str
    concurrency: int
    latencies_ms: list[float]
    errors: int
    seconds: float
    max_backlog: int | None

    def row(self) -> str:
        ordered = sorted(self.latencies_ms) or [float("nan")]

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

        backlog = "-" if self.max_backlog is None else str(self.max_backlog)
        return (f"| {self.mode:<13} | {self.concurrency:>3} | {len(self.latencies_ms):>5} | "
                f"{len(self.latencies_ms) / self.seconds:>7.1f} | {statistics.median(ordered):>7.1f} | "
                f"{pct(0.95):>7.1f} | {pct(0.99):>7.1f} | {self.errors:>6} | {backlog:>11} |")


async def _closed_loop(url: str, reference_id: str, target: bytes, concurrency: int, warmup_s: float,
                       seconds: float) -> tuple[list[float], int]:
    """``concurrency`` clients in a closed loop; latencies and errors after the warm-up."""
    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    measure_from, end = start + warmup_s, start + warmup_s + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while (sent := time.monotonic()) < end:
            try:
                response = await client.post("/segment", files={"target": ("t.png", target, "image/png")},
                                             data={"reference_ids": reference_id})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if sent >= measure_from:
                if ok:
                    latencies.append((time.monotonic() - sent) * 1000.0)
                else:
                    errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return latencies, errors


async def _max_backlog(redis_url: str, stop: asyncio.Event) -> int:
    """The largest stream backlog seen while ``stop`` is unset."""
    from workers.connection import connect
    from workers.producer import Producer

    client = connect(redis_url)
    queue, largest = Producer(client), 0
    while not stop.is_set():
        largest = max(largest, await queue.backlog())
        await asyncio.sleep(0.02)
    await client.aclose()
    return largest


async def _measure(url: str, redis_url: str | None, reference_id: str, target: bytes, concurrency: int,
                   warmup_s: float, seconds: float) -> tuple[list[float], int, int | None]:
    stop = asyncio.Event()
    sampler = asyncio.create_task(_max_backlog(redis_url, stop)) if redis_url else None
    latencies, errors = await _closed_loop(url, reference_id, target, concurrency, warmup_s, seconds)
    stop.set()
    return latencies, errors, (await sampler if sampler else None)


def run_mode(mode: str, workers: int, args: argparse.Namespace, weights: Path, workdir: Path) -> list[Level]:
    """Start the processes of one mode, load them at every concurrency level, stop them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "INSID3_BASIS_CACHE_DIR": str(workdir / "basis"), "INSID3_LOG_LEVEL": "warning",
           "INSID3_MAX_BATCH": str(args.max_batch), "INSID3_MAX_WAIT_MS": str(args.max_wait_ms),
           "INSID3_MAX_QUEUE": str(args.max_queue)}
    engine = ["--model-size", "tiny", "--weights", str(weights), "--image-size", str(args.image_size),
              "--device", "cpu"]
    logs = workdir / mode
    logs.mkdir()
    port = free_port()
    redis_url = None
    with ExitStack() as stack:
        processes = Processes(logs, env)
        stack.callback(processes.close)
        if workers == 0:
            processes.insid3("api", ["serve", "--port", str(port), *engine], core=0)
        else:
            redis_port = free_port()
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            processes.start("redis", [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                                      "--save", "", "--appendonly", "no"], processes.service_cores)
            for index in range(workers):
                processes.insid3(f"worker{index}", ["worker", "--redis-url", redis_url, *engine,
                                                    "--name", f"bench-{index}"], core=index)
            processes.insid3("api", ["serve", "--port", str(port), "--redis-url", redis_url, *engine],
                             processes.service_cores)
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/readyz", f"{mode} API")
        if workers > 1:  # readiness needs one live worker: wait for all of them
            _wait_workers(redis_url, workers)
        image, mask = disc_scene(1, 240, 320)
        target, _ = disc_scene(2, 240, 320)
        created = httpx.post(f"{url}/references", files={"image": image, "mask": mask}, timeout=120)
        created.raise_for_status()
        reference_id = created.json()["reference_id"]
        levels = []
        for concurrency in args.concurrency:
            latencies, errors, backlog = asyncio.run(_measure(
                url, redis_url, reference_id, target, concurrency, args.warmup, args.seconds))
            levels.append(Level(mode, concurrency, latencies, errors, args.seconds, backlog))
            print(levels[-1].row(), flush=True)
    return levels


def _wait_workers(redis_url: str | None, count: int) -> None:
    import redis

    client = redis.Redis.from_url(redis_url or "")
    deadline = time.monotonic() + 300
    while len(list(client.scan_iter(match="insid3:worker:*"))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} workers registered")
        time.sleep(0.1)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured time before each level")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 4, 16])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-queue", type=int, default=16)
    args = parser.parse_args()

    from core.checkpoint import make_checkpoint

    os.sched_setaffinity(0, service_cores())  # this load generator stays off the engines' cores
    print(f"closed loop on POST /segment: tiny random checkpoint at {args.image_size}, CPU, 1 torch thread per "
          f"engine, {os.cpu_count()} cores, max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms, "
          f"backlog bound {args.max_queue}, {args.seconds:g} s per level after {args.warmup:g} s warm-up")
    print("| mode          |   c |  reqs |   req/s | p50 ms  | p95 ms  | p99 ms  | errors | max backlog |")
    print("|---------------|-----|-------|---------|---------|---------|---------|--------|-------------|")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        weights = workdir / "tiny.pth"
        make_checkpoint("tiny", weights, seed=0)
        results = {mode: run_mode(mode, workers, args, weights, workdir)
                   for mode, workers in (("embedded", 0), ("redis-1worker", 1), ("redis-2workers", 2))}

    def p50(mode: str, concurrency: int) -> float:
        return statistics.median(next(lv for lv in results[mode] if lv.concurrency == concurrency).latencies_ms)

    def throughput(mode: str, concurrency: int) -> float:
        level = next(lv for lv in results[mode] if lv.concurrency == concurrency)
        return len(level.latencies_ms) / level.seconds

    low, high = min(args.concurrency), max(args.concurrency)
    print(f"Redis-mode p50 overhead at c={low}: {p50('redis-1worker', low) - p50('embedded', low):+.1f} ms "
          "(target <= 10 ms)")
    print(f"errors at c={high}: " + ", ".join(
        f"{mode} {next(lv for lv in levels if lv.concurrency == high).errors}" for mode, levels in results.items())
        + " (target 0)")
    print(f"2 workers vs 1 at c={high}: {throughput('redis-2workers', high) / throughput('redis-1worker', high):.2f}x "
          "(target >= 1.6x with a core per worker)")


if __name__ == "__main__":
    main()
