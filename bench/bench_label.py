"""Benchmark: images per second of labelling one folder four ways, side by side in one run.

- ``insid3 label`` in-process (the engine in the command: references encoded once, targets decoded
  ahead on a thread);
- ``insid3 label --server`` against ``insid3 serve`` (embedded engine), ``--concurrency`` requests in flight;
- ``insid3 label --server`` against the Redis pool (``insid3 serve --redis-url`` + ``--workers`` workers);
- a naive loop over the raw API: one ``POST /segment`` at a time, each RLE decoded with pycocotools.

A random tiny checkpoint on the CPU, disc scenes of 320x240. The rate of the ``label`` runs is the
one their summary prints (from the first image to the output written: the engine build and the
references are left out); the naive loop's likewise starts after its reference is stored. Each
service answers one warm-up request first; the in-process run pays its process's first calls
(encoder, clustering) inside its rate, as a real run does.

    .venv/bin/python bench/bench_label.py [--images 20] [--image-size 64] [--concurrency 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
from pycocotools import mask as coco_mask
from scenes import disc_scene, free_port, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[1]
RATE = re.compile(r"this run, ([0-9.]+) images/s")


def cpu_model() -> str:
    """The CPU's model name and core count."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores"


class Children:
    """Background processes of the benchmark, stopped at the end."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env, self.started = logs, env, []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as log:
            child = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.started.append(child)
        return child

    def close(self) -> None:
        for child in reversed(self.started):
            child.terminate()
        for child in self.started:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()


def label(env: dict[str, str], args: list[str]) -> float:
    """Run ``insid3 label ARGS``; the images/s its summary reports."""
    done = subprocess.run([sys.executable, "-m", "insid3", "label", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True)
    found = RATE.search(done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"insid3 label failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return float(found.group(1))


def naive_loop(url: str, reference: tuple[Path, Path], images: list[Path]) -> float:
    """One request at a time over the raw API, each answer's RLE decoded; images/s after the reference."""
    with httpx.Client(base_url=url, timeout=120) as http:
        created = http.post("/references", files={"image": reference[0].read_bytes(),
                                                  "mask": reference[1].read_bytes()})
        created.raise_for_status()
        reference_id = created.json()["reference_id"]
        start = time.perf_counter()
        for image in images:
            response = http.post("/segment", files={"target": (image.name, image.read_bytes())},
                                 data={"reference_ids": reference_id})
            response.raise_for_status()
            rle = response.json()["results"][0]["rle"]
            np.asarray(coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}), dtype=bool)
        return len(images) / (time.perf_counter() - start)


def wait_workers(redis_url: str, count: int, timeout_s: float = 300.0) -> None:
    """Until every worker has registered (readiness needs only one)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    while sum(client.exists(f"insid3:worker:bench-{i}") for i in range(count)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not all register")
        time.sleep(0.1)
    client.close()


def warm_up(url: str, reference: tuple[Path, Path], image: Path) -> None:
    """One reference and one /segment call, so that no measured mode pays the service's first calls."""
    with httpx.Client(base_url=url, timeout=300) as http:
        created = http.post("/references", files={"image": reference[0].read_bytes(),
                                                  "mask": reference[1].read_bytes()})
        created.raise_for_status()
        http.post("/segment", files={"target": image.read_bytes()},
                  data={"reference_ids": created.json()["reference_id"]}).raise_for_status()


def make_data(workdir: Path, count: int) -> tuple[Path, tuple[Path, Path], list[Path]]:
    folder = workdir / "images"
    folder.mkdir()
    for i in range(count):
        (folder / f"img{i:04d}.png").write_bytes(disc_scene(10 + i % 7, 240, 320)[0])
    image, mask = disc_scene(1, 240, 320)
    (workdir / "ref.png").write_bytes(image)
    (workdir / "ref_mask.png").write_bytes(mask)
    return folder, (workdir / "ref.png", workdir / "ref_mask.png"), sorted(folder.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-label-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "INSID3_BASIS_CACHE_DIR": str(workdir / "basis"),
               "INSID3_LOG_LEVEL": "warning"}
        weights = workdir / "tiny.pth"
        subprocess.run([sys.executable, "-m", "insid3", "make-checkpoint", "--model-size", "tiny", "--out",
                        str(weights)], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
        engine = ["--model-size", "tiny", "--weights", str(weights), "--image-size", str(options.image_size),
                  "--device", "cpu"]
        folder, reference, images = make_data(workdir, options.images)
        job = ["--reference", str(reference[0]), str(reference[1]), "--images", str(folder)]
        children = Children(workdir, env)
        stack.callback(children.close)
        rates = {"label, in-process": label(env, [*job, "--out", str(workdir / "local.json"), *engine])}

        port = free_port()
        api = children.start("serve", [sys.executable, "-m", "insid3", "serve", "--port", str(port), *engine])
        if not wait_ready(f"http://127.0.0.1:{port}", api):
            raise RuntimeError("insid3 serve did not become ready")
        url = f"http://127.0.0.1:{port}"
        warm_up(url, reference, images[0])
        remote = ["--server", url, "--concurrency", str(options.concurrency)]
        rates[f"label --server, embedded (concurrency {options.concurrency})"] = label(
            env, [*job, "--out", str(workdir / "embedded.json"), *remote])
        rates["naive sequential loop, raw API (embedded)"] = naive_loop(url, reference, images)

        redis_port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        children.start("redis", [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                                 "--save", "", "--appendonly", "no"])
        for index in range(options.workers):
            children.start(f"worker{index}", [sys.executable, "-m", "insid3", "worker", "--redis-url", redis_url,
                                              *engine, "--name", f"bench-{index}"])
        pool_port = free_port()
        pool_api = children.start("pool-api", [sys.executable, "-m", "insid3", "serve", "--port", str(pool_port),
                                               "--redis-url", redis_url, *engine])
        if not wait_ready(f"http://127.0.0.1:{pool_port}", pool_api):
            raise RuntimeError("insid3 serve --redis-url did not become ready")
        wait_workers(redis_url, options.workers)
        warm_up(f"http://127.0.0.1:{pool_port}", reference, images[0])
        rates[f"label --server, pool of {options.workers} (concurrency {options.concurrency})"] = label(
            env, [*job, "--out", str(workdir / "pool.json"), "--server", f"http://127.0.0.1:{pool_port}",
                  "--concurrency", str(options.concurrency)])

    print(f"CPU: {cpu_model()}")
    print(f"{options.images} images of 320x240, random tiny checkpoint at image size {options.image_size}\n")
    print("| mode | images/s |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.2f} |")


if __name__ == "__main__":
    main()
