"""A real ``insid3 serve`` under uvicorn: request bodies over the limit are cut off by what the server
reads, from Content-Length or while a chunked body streams in; the engine still answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import assert_error, decode_rle, reference_id, segment
from tests.support.images import REFERENCE, TARGET, iou

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def test_the_served_engine_finds_the_disc(http):
    response = segment(http, [TARGET], {"reference_ids": reference_id(http, REFERENCE)})
    assert response.status_code == 200, response.text
    assert iou(decode_rle(response.json()["results"][0]["rle"]), TARGET.mask) > 0.5


def test_upload_over_the_limit_is_413_from_content_length(http):
    files = {"target": ("t", b"\0" * (MAX_UPLOAD_BYTES + 1), "image/png")}
    body = assert_error(http.post("/segment", files=files, data={"reference_ids": "r"}), 413, "upload_too_large")
    assert str(MAX_UPLOAD_BYTES) in body["detail"]


def test_streamed_upload_over_the_limit_is_413(http):
    def chunks():
        block = b"\0" * (1 << 20)
        yield b"--x\r\nContent-Disposition: form-data; name=\"target\"; filename=\"t\"\r\n\r\n"
        for _ in range(21):
            yield block
        yield b"\r\n--x--\r\n"

    response = http.post("/segment", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "upload_too_large")
