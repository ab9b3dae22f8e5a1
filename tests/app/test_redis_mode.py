"""The same HTTP surface with ``--redis-url``: jobs go through Redis to an ``insid3 worker``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import tiny_args
from tests.app.helpers import assert_error, create_reference, decode_rle, segment
from tests.app.scenes import REFERENCE, REFERENCE_2, TARGET, iou, png_bytes
from tests.conftest import REPO_ROOT

DATABASE = "/14"  # a database of the session's redis-server that no other test area uses


@pytest.fixture(scope="module")
def redis_client(redis_url, start_server, tiny_checkpoint, tmp_path_factory) -> Iterator[httpx.Client]:
    url = urlunsplit(urlsplit(redis_url)._replace(path=DATABASE))
    subprocess.run([sys.executable, "-c", f"import redis; redis.Redis.from_url({url!r}).flushdb()"], check=True)
    workdir = tmp_path_factory.mktemp("worker")
    env = {**os.environ, "INSID3_BASIS_CACHE_DIR": str(workdir / "basis")}
    worker_args = tiny_args(tiny_checkpoint)
    with (workdir / "worker.log").open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "insid3", "worker", "--redis-url", url, *worker_args],
                                  cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        server = start_server([*tiny_args(tiny_checkpoint), "--redis-url", url])
        with httpx.Client(base_url=server.url, timeout=120) as http:
            yield http
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_readiness_names_the_mode(redis_client):
    assert redis_client.get("/readyz").json()["mode"] == "redis"


def test_references_segment_and_match(redis_client):
    first = create_reference(redis_client, REFERENCE)
    assert first.status_code == 201, first.text
    ref_id = first.json()["reference_id"]
    assert create_reference(redis_client, REFERENCE).status_code == 200
    assert redis_client.get(f"/references/{ref_id}").json()["reference_id"] == ref_id

    [result] = segment(redis_client, [TARGET], {"reference_ids": ref_id}).json()["results"]
    assert iou(decode_rle(result["rle"]), TARGET.mask) > 0.5
    png = segment(redis_client, [TARGET], {"reference_ids": ref_id, "format": "png"})
    assert png.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))) > 0, decode_rle(result["rle"]))

    second = create_reference(redis_client, REFERENCE_2).json()["reference_id"]
    assert segment(redis_client, [TARGET], {"reference_ids": [ref_id, second]}).status_code == 200

    matched = redis_client.post("/match", files={"target": ("t", TARGET.png, "image/png")},
                                data={"reference_id": ref_id, "points": json.dumps([[90, 70]])})
    assert matched.status_code == 200, matched.text
    point = matched.json()["points"][0]
    assert (point["x"] - 100) ** 2 + (point["y"] - 60) ** 2 < 30**2

    assert redis_client.delete(f"/references/{ref_id}").status_code == 204
    assert_error(redis_client.get(f"/references/{ref_id}"), 404, "reference_not_found")


def test_bad_input_gives_the_same_errors(redis_client):
    files = {"image": ("i", b"not an image", "image/png"), "mask": ("m", REFERENCE.mask_png, "image/png")}
    assert_error(redis_client.post("/references", files=files), 415, "invalid_image")
    empty = png_bytes(np.zeros(REFERENCE.mask.shape, dtype=np.uint8))
    files = {"image": ("i", REFERENCE.png, "image/png"), "mask": ("m", empty, "image/png")}
    assert_error(redis_client.post("/references", files=files), 422, "empty_mask")
    assert_error(segment(redis_client, [TARGET], {"reference_ids": "0" * 32}), 404, "reference_not_found")


def test_metrics_include_the_redis_gauges(redis_client):
    text = redis_client.get("/metrics").text
    assert "insid3_queue_depth" in text and "insid3_dead_letters" in text
    assert 'insid3_http_requests_total{method="POST",route="/segment"' in text
