"""The same HTTP surface with ``redis_url`` set: the app (in-process, the real ``RedisBackend``)
sends jobs through the session's real redis-server to a real ``insid3 worker`` process."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from tests.app.conftest import failed_request_cleanup, in_process, tiny_args
from tests.support.api import assert_error, create_reference, decode_rle, reference_id, segment
from tests.support.images import REFERENCE, REFERENCE_2, TARGET, decode, encode, iou, small_scene, undecodable_dds
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


def test_a_failed_request_deletes_only_the_inline_reference_it_created(redis_client):
    assert failed_request_cleanup(redis_client, small_scene(31), stored_meanwhile=False) == 404
    assert failed_request_cleanup(redis_client, small_scene(32), stored_meanwhile=True) == 200


def test_a_corrupt_record_is_a_410_then_gone_and_never_breaks_the_listing(redis_client, redis_url):
    store = redis.Redis.from_url(urlunsplit(urlsplit(redis_url)._replace(path=DATABASE)))
    ids = [reference_id(redis_client, small_scene(seed)) for seed in (41, 42, 43)]
    for corrupt in ids[:2]:
        store.hset(f"insid3:ref:{corrupt}", "info", b"{not json")
    assert_error(redis_client.get(f"/references/{ids[0]}"), 410, "reference_corrupt")
    assert_error(redis_client.get(f"/references/{ids[0]}"), 404, "reference_not_found")
    listed = redis_client.get("/references", params={"limit": 1000})
    assert listed.status_code == 200
    assert ids[2] in {item["reference_id"] for item in listed.json()["items"]}
    assert not {item["reference_id"] for item in listed.json()["items"]} & set(ids[:2])
    assert not store.exists(f"insid3:ref:{ids[1]}")  # the listing dropped it
    again = reference_id(redis_client, small_scene(41))  # storing it again repairs it
    store.hset(f"insid3:ref:{again}", "info", b"[]")
    assert_error(segment(redis_client, [TARGET], {"reference_ids": again}), 410, "reference_corrupt")
    assert_error(segment(redis_client, [TARGET], {"reference_ids": again}), 404, "reference_not_found")


def test_a_segment_request_reads_its_reference_once_per_connection(redis_client, redis_url):
    """MONITOR on the live stack: no connection (API or worker) touches the reference's key twice
    for one POST /segment; commands inside Lua scripts aside."""
    ref_id = reference_id(redis_client, small_scene(51))
    url = urlunsplit(urlsplit(redis_url)._replace(path=DATABASE))
    key = f"insid3:ref:{ref_id}"
    done = f"monitor-done-{ref_id}"
    seen: list[dict] = []
    started = threading.Event()

    def watch() -> None:
        with redis.Redis.from_url(url).monitor() as monitor:
            started.set()
            for command in monitor.listen():
                if done in command["command"]:
                    return
                seen.append(command)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert started.wait(10)
    redis.Redis.from_url(url).ping()  # MONITOR is on once a later command shows up
    assert segment(redis_client, [TARGET], {"reference_ids": ref_id}).status_code == 200
    redis.Redis.from_url(url).echo(done)
    watcher.join(10)
    assert not watcher.is_alive()
    on_key = Counter(f"{c['client_address']}:{c['client_port']}" for c in seen
                     if key in c["command"] and c["client_type"] != "lua"
                     and not c["command"].upper().startswith(("EVAL", "EVALSHA")))
    assert on_key, "the request never read its reference"
    assert max(on_key.values()) == 1, on_key
