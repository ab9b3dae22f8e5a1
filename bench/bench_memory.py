"""Benchmark: memory and time of one huge target on ``POST /segment`` (issue 11's acceptance).

Starts ``insid3 serve`` (embedded mode, a random tiny checkpoint on the CPU), stores a small
reference, then sends a 7999x7999 PNG target (a flat image with a red disc: ~190 KB on the wire,
64 Mpx decoded, just under the default ``INSID3_MAX_PIXELS``) with ``format=overlay`` and then
``format=rle``, one request and then 3 concurrent ones. The server's RSS is sampled every 20 ms
(psutil when installed, else /proc/PID/status); printed per case: the RSS before, the peak growth,
the RSS once settled after, and the wall time of the requests.

    .venv/bin/python bench/bench_memory.py [--side 7999] [--image-size 128] [--settle-s 3]

Acceptance (issue 11): overlay peak growth <= 800 MB (one request), <= 1.2 GB (3 concurrent), and
RSS back within 150 MB of the level before.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image, ImageDraw
from scenes import disc_scene, free_port, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid``."""
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {pid}") from None
    return int(psutil.Process(pid).memory_info().rss)


class Sampler:
    """The largest RSS of a process seen between start and stop, sampled every ``interval_s``."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(self.interval_s)

    def __enter__(self) -> Sampler:
        self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


def settled_rss(pid: int, settle_s: float) -> int:
    """The RSS after ``settle_s`` seconds of quiet (the lowest of the last half second)."""
    time.sleep(max(0.0, settle_s - 0.5))
    samples = []
    for _ in range(25):
        samples.append(rss_bytes(pid))
        time.sleep(0.02)
    return min(samples)


def huge_target(side: int) -> bytes:
    """A ``side`` x ``side`` flat PNG with a red disc: tiny on the wire, ``side``² pixels decoded."""
    image = Image.new("RGB", (side, side), (90, 110, 90))
    ImageDraw.Draw(image).ellipse([side * 0.3, side * 0.3, side * 0.7, side * 0.7], fill=(200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def segment(url: str, reference_id: str, target: bytes, fmt: str) -> tuple[int, int, float]:
    """Status, body size and seconds of one ``POST /segment``."""
    started = time.perf_counter()
    response = httpx.post(f"{url}/segment", files={"target": ("t.png", target, "image/png")},
                          data={"reference_ids": reference_id, "format": fmt}, timeout=600)
    return response.status_code, len(response.content), time.perf_counter() - started


def measure(pid: int, url: str, reference_id: str, target: bytes, fmt: str, concurrency: int,
            settle_s: float) -> str:
    """One table row: RSS before, peak growth, settled RSS after, wall times."""
    before = settled_rss(pid, settle_s)
    with Sampler(pid) as sampler, ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        answers = list(pool.map(lambda _: segment(url, reference_id, target, fmt), range(concurrency)))
        wall = time.perf_counter() - started
    after = settled_rss(pid, settle_s)
    statuses = ",".join(sorted({str(status) for status, _, _ in answers}))
    each = max(seconds for _, _, seconds in answers)
    size = max(length for _, length, _ in answers)
    return (f"| {fmt:<7} | {concurrency:>2} | {statuses:>6} | {before / MB:>7.0f} "
            f"| {(sampler.peak - before) / MB:>+8.0f} | {(after - before) / MB:>+8.0f} | {wall:>6.2f} "
            f"| {each:>6.2f} | {size / 1024:>8.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=7999)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--settle-s", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        workdir = Path(tmp)
        weights = workdir / "tiny.pth"
        subprocess.run([sys.executable, "-m", "insid3", "make-checkpoint", "--model-size", "tiny",
                        "--out", str(weights)], cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        env = {**os.environ, "INSID3_BASIS_CACHE_DIR": str(workdir / "basis"), "INSID3_LOG_LEVEL": "warning"}
        with (workdir / "api.log").open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "insid3", "serve", "--model-size", "tiny", "--weights", str(weights),
                 "--image-size", str(args.image_size), "--device", "cpu", "--port", str(port)],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            if not wait_ready(url):
                raise RuntimeError("the API did not become ready")
            image, mask = disc_scene(1, 240, 320)
            created = httpx.post(f"{url}/references", files={"image": image, "mask": mask}, timeout=120)
            created.raise_for_status()
            reference_id = created.json()["reference_id"]
            small, _ = disc_scene(2, 240, 320)
            for fmt in ("overlay", "rle", "png", "polygons"):  # warm-up: imports and first-call costs
                segment(url, reference_id, small, fmt)
            target = huge_target(args.side)
            print(f"target: {args.side}x{args.side} PNG, {len(target) / 1024:.0f} KB; server pid {server.pid}; "
                  f"RSS in MB, times in s, sampled every 20 ms", flush=True)
            print("| format  |  c | status |  before |     peak |    after |   wall | slowest |  body KB |")
            print("|---|---|---|---|---|---|---|---|---|", flush=True)
            for fmt in ("overlay", "rle"):
                for concurrency in (1, 3):
                    print(measure(server.pid, url, reference_id, target, fmt, concurrency, args.settle_s),
                          flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
