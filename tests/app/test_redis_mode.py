"""The same HTTP surface with ``redis_url`` set: the app (in-process, the real ``RedisBackend``)
sends jobs through the session's real redis-server to a real ``insid3 worker`` process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from tests.app.conftest import in_process, tiny_args
from tests.support.api import assert_error, create_reference, decode_rle, segment
from tests.support.images import REFERENCE, REFERENCE_2, TARGET, decode, encode, iou, undecodable_dds
from tests.support.processes import Process

DATABASE = "/14"  # a database of the session's redis-server that no other test area uses


@pytest.fixture(scope="module")
def redis_client(redis_url, tiny_settings, tiny_checkpoint, tmp_path_factory) -> Iterator[TestClient]:
    url = urlunsplit(urlsplit(redis_url)._replace(path=DATABASE))
    redis.Redis.from_url(url).flushdb()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = Process.insid3(["worker", "--redis-url", url, *tiny_args(tiny_checkpoint)], log)
    try:
        with in_process(tiny_settings(redis_url=url)) as http:
            yield http
    finally:
        worker.stop()


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
    assert np.array_equal(decode(png.content) > 0, decode_rle(result["rle"]))

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
    empty = encode(np.zeros(REFERENCE.mask.shape, dtype=np.uint8))
    files = {"image": ("i", REFERENCE.png, "image/png"), "mask": ("m", empty, "image/png")}
    assert_error(redis_client.post("/references", files=files), 422, "empty_mask")
    assert_error(segment(redis_client, [TARGET], {"reference_ids": "0" * 32}), 404, "reference_not_found")


def test_a_poison_image_is_answered_415_once_not_retried(redis_client, redis_url):
    """A decoding failure is the caller's: the worker answers it at once, never retries or dead-letters it."""
    ref_id = create_reference(redis_client, REFERENCE).json()["reference_id"]
    files = {"target": ("t.dds", undecodable_dds(), "application/octet-stream")}
    assert_error(redis_client.post("/segment", files=files, data={"reference_ids": ref_id}), 415, "invalid_image")
    dead = redis.Redis.from_url(urlunsplit(urlsplit(redis_url)._replace(path=DATABASE))).xlen("insid3:dead")
    assert dead == 0
    assert segment(redis_client, [TARGET], {"reference_ids": ref_id}).status_code == 200  # the worker goes on


def test_metrics_include_the_redis_gauges(redis_client):
    text = redis_client.get("/metrics").text
    assert "insid3_queue_depth" in text and "insid3_dead_letters" in text
    assert 'insid3_http_requests_total{method="POST",route="/segment"' in text
