"""``insid3 label --server`` against the Redis worker pool (`insid3 serve --redis-url` and two
`insid3 worker`s on a real redis-server), one worker killed with SIGKILL while it holds jobs of the
run: the run still ends with every image labelled exactly once, masks equal to the in-process run's."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from insid3.cli import main as insid3
from tests.labelling.conftest import engine_args, journal_records, make_folder
from tests.support.net import eventually, free_port
from tests.support.processes import Process
from tests.workers.conftest import database_url
from tests.workers.helpers import IMAGE_SIZE, Launcher
from workers.keys import DEFAULT_KEYS, GROUP

IMAGES = 30
WORKER_OPTIONS = ("--max-batch", "4", "--max-wait-ms", "200")  # a worker visibly holds the jobs of a batch
# The same encoder runtime in both runs: `auto` measures, and may pick differently per process.
RUNTIME = ("--runtime", "openvino")


@pytest.fixture
def pool(redis_server, tiny_checkpoint: Path, tmp_path: Path):
    launcher = Launcher(database_url(redis_server.url), tiny_checkpoint, tmp_path)
    try:
        workers = {name: launcher.worker(name, free_port(), *WORKER_OPTIONS, *RUNTIME, wait=False)
                   for name in ("w1", "w2")}
        port = free_port()
        api = launcher.api(port, wait=False)
        for name, process in workers.items():
            launcher.wait_worker(name, process)
        launcher.wait_api(port, api)
        yield launcher, workers, f"http://127.0.0.1:{port}"
    finally:
        launcher.close()


def _holds_jobs(launcher: Launcher, name: str) -> bool:
    models = [m.decode() for m in launcher.redis.smembers(DEFAULT_KEYS.models) if m.decode().endswith(f"@{IMAGE_SIZE}")]
    if not models:
        return False
    try:
        stream = DEFAULT_KEYS.for_model(models[0]).stream
        return bool(launcher.redis.xpending_range(stream, GROUP, "-", "+", 10, consumername=name))
    except Exception:  # the stream or group does not exist yet
        return False


def _records(journal: Path) -> dict[str, dict]:
    return {r["image"]: {k: v for k, v in r.items() if k != "path"} for r in journal_records(journal)}


def test_a_worker_killed_mid_run_costs_nothing(pool, tiny_checkpoint, examples, tmp_path) -> None:
    launcher, workers, url = pool
    folder = make_folder(tmp_path / "data", IMAGES, broken=False)
    [(image, mask), (image_2, mask_2)] = examples["red"]
    references = ["--reference", str(image), str(mask), "--reference", str(image_2), str(mask_2)]
    served = tmp_path / "served.json"
    run = Process.insid3(["label", *references, "--images", str(folder), "--out", str(served), "--server", url,
                          "--concurrency", "4"], tmp_path / "label.log")
    eventually(lambda: run.check_alive() or _holds_jobs(launcher, "w1"), 60, "worker w1 to hold jobs of the run",
               interval_s=0.002)
    os.kill(workers["w1"].pid, signal.SIGKILL)
    assert run.wait(300) == 0, run.output()
    assert workers["w1"].popen.wait() == -signal.SIGKILL

    lines = journal_records(tmp_path / "served.json.journal.jsonl")
    assert len(lines) == len({r["image"] for r in lines}) == IMAGES  # each image exactly once

    local = tmp_path / "local.json"
    assert insid3(["label", *references, "--images", str(folder), "--out", str(local),
                   *engine_args(tiny_checkpoint), *RUNTIME]) == 0
    assert _records(tmp_path / "served.json.journal.jsonl") == _records(tmp_path / "local.json.journal.jsonl")
