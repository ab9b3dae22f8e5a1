"""``insid3.client`` against a real ``insid3 serve`` (uvicorn, the tiny random checkpoint) whose queue
holds one job: masks equal the raw API's, errors carry the API's code, and concurrent calls that meet
a full queue are retried (Retry-After) until each has its answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from insid3.client import AsyncClient, Client, ClientError, ConnectionFailed, decode_rle
from tests.support.api import decode_rle as pycocotools_decode
from tests.support.images import REFERENCE, TARGET, TARGET_2, TWO_DISCS, iou
from tests.support.metrics import parse
from tests.support.net import free_port
from tests.support.paths import REPO_ROOT

CONCURRENT = 6


def test_importing_the_client_loads_neither_torch_nor_the_engine_nor_the_app() -> None:
    code = ("import sys, insid3.client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'core', 'app', 'workers')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_rle_decoding_equals_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (64, 80), (300, 200)]:
        for mask in (rng.random(shape) < 0.5, np.zeros(shape, bool), np.ones(shape, bool), rng.random(shape) < 0.01):
            encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert np.array_equal(decode_rle({"size": encoded["size"], "counts": encoded["counts"].decode()}), mask)


def test_masks_equal_the_decoded_rle_of_the_raw_api(busy_server, tmp_path) -> None:
    reference_path = tmp_path / "reference.png"
    reference_path.write_bytes(REFERENCE.png)
    with Client(busy_server.url) as client:
        reference = client.add_reference(reference_path, REFERENCE.mask, name="disc")
        again = client.add_reference(REFERENCE.png, Image.fromarray(REFERENCE.mask.astype(np.uint8) * 255))
        assert again.reference_id == reference.reference_id  # the same content, as bytes and as a PIL image
        # a list of one target, and one target alone (this server's queue holds one job: one target a call)
        results = [*client.segment([TARGET.image], references=[reference.reference_id], instances=True),
                   *client.segment(TWO_DISCS.png, references=[reference.reference_id], instances=True)]
    raw = [httpx.post(f"{busy_server.url}/segment", timeout=60, files={"target": ("t.png", scene.png)},
                      data={"reference_ids": reference.reference_id, "instances": "true"}).json()["results"][0]
           for scene in (TARGET, TWO_DISCS)]
    assert reference.width == REFERENCE.image.shape[1] and reference.name == "disc"
    for result, body, scene in zip(results, raw, (TARGET, TWO_DISCS), strict=True):
        assert result.mask.dtype == bool and result.mask.shape == scene.mask.shape
        assert np.array_equal(result.mask, pycocotools_decode(body["rle"]))
        assert result.score == body["score"] and result.area == body["area"] == int(result.mask.sum())
        assert [np.array_equal(i.mask, pycocotools_decode(b["rle"])) for i, b in
                zip(result.instances, body["instances"], strict=True)] == [True] * len(body["instances"])
    assert iou(results[0].mask, TARGET.mask) > 0.25  # the disc is found (a coarse 4x4-patch grid at 64 px)


def test_references_are_listed_inspected_and_deleted(busy_server) -> None:
    with Client(busy_server.url) as client:
        reference = client.add_reference(TARGET_2.png, TARGET_2.mask, ttl_s=600)
        assert reference.reference_id in [r.reference_id for r in client.list_references()]
        assert client.get_reference(reference.reference_id) == reference
        matched = client.match(TARGET.png, reference.reference_id, [[10, 12], [60, 80]])
        assert matched.points.shape == (2, 2) and matched.confidence.shape == (2,)
        client.delete_reference(reference.reference_id)
        with pytest.raises(ClientError) as missing:
            client.get_reference(reference.reference_id)
    assert missing.value.code == "reference_not_found" and missing.value.status == 404


def test_a_missing_reference_is_an_error_with_its_code(busy_server) -> None:
    with Client(busy_server.url) as client, pytest.raises(ClientError) as raised:
        client.segment(TARGET.png, references=["0" * 32])
    error = raised.value
    assert (error.code, error.status) == ("reference_not_found", 404)
    assert "0" * 32 in error.detail and error.request_id


def _segment_503s(url: str) -> float:
    samples = parse(httpx.get(f"{url}/metrics", timeout=10).text)
    return sum(v for k, v in samples.items() if k.startswith("insid3_http_requests_total")
               and 'route="/segment"' in k and 'status="503"' in k)


def test_six_concurrent_calls_against_a_queue_of_one_all_succeed(busy_server) -> None:
    before = _segment_503s(busy_server.url)
    with Client(busy_server.url) as client:
        reference = client.add_reference(REFERENCE.png, REFERENCE.mask)
        with ThreadPoolExecutor(CONCURRENT) as pool:
            results = list(pool.map(lambda scene: client.segment(scene.png, [reference.reference_id])[0],
                                    [TARGET, TARGET_2] * (CONCURRENT // 2)))

    async def together() -> list:
        async with AsyncClient(busy_server.url) as client:
            return await asyncio.gather(*(client.segment(TARGET.png, [reference.reference_id])
                                          for _ in range(CONCURRENT)))

    async_results = asyncio.run(together())
    assert len(results) == len(async_results) == CONCURRENT
    assert all(np.array_equal(r.mask, results[0].mask) for r in (results[0::2] + [a[0] for a in async_results]))
    assert _segment_503s(busy_server.url) > before  # the queue was full: the calls were retried


def test_an_unreachable_service_is_a_connection_error_within_the_deadline() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", timeout=2.0, backoff_s=0.05)
    with client, pytest.raises(ConnectionFailed) as raised:
        client.list_references()
    assert raised.value.code == "connection_error" and raised.value.status is None
