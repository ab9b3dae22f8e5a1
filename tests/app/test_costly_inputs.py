"""Inputs whose cost would outlive their deadline (a progressive-JPEG scan bomb, a 64,000,000x1
PNG) are refused from their headers: the embedded server goes on answering everyone else."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from app.main import create_app
from tests.support.api import assert_error
from tests.support.images import REFERENCE, TARGET, encode, scan_bomb, thin_png
from tests.support.live_server import LiveServer
from tests.support.memory import PeakGrowth

RSS_BOUND = 800 << 20  # the documented bound of one request's memory, whatever its shape


@pytest.fixture(scope="module")
def live(tiny_settings) -> Iterator[str]:
    server = LiveServer(create_app(tiny_settings(render_concurrency=2))).start("/readyz")
    yield server.url
    server.stop()


def segment(url: str, target: bytes, fmt: str = "rle", timeout_s: float = 10.0, **headers: str) -> httpx.Response:
    """POST /segment of ``target`` with the inline reference, answered within ``timeout_s``."""
    files = [("target", ("t", target, "application/octet-stream")),
             ("reference_image", ("r.png", REFERENCE.png, "image/png")),
             ("reference_mask", ("m.png", REFERENCE.mask_png, "image/png"))]
    return httpx.post(f"{url}/segment", files=files, data={"format": fmt}, headers=headers, timeout=timeout_s)


def in_background(call) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


def test_a_scan_bomb_in_flight_does_not_hold_the_next_request(live: str) -> None:
    bomb, answers = in_background(lambda: segment(live, scan_bomb(), timeout_s=30, **{"X-Request-Timeout": "5"}))
    time.sleep(6)
    assert segment(live, TARGET.png).status_code == 200  # within 10 s, or httpx raises
    bomb.join(timeout=30)
    body = assert_error(answers[0], 413, "image_too_large")
    assert "over the limit of 100 scans" in body["detail"]


def test_a_64_megapixel_thin_png_is_refused_within_the_memory_bound(live: str) -> None:
    thin, peak = thin_png(), PeakGrowth()
    peak.reset()
    body = assert_error(segment(live, thin, "rle"), 413, "image_too_large")
    assert "64000000x1" in body["detail"] and "pixels per side" in body["detail"]
    assert peak.bytes() <= RSS_BOUND
    polygons = [in_background(lambda: segment(live, thin, "polygons", timeout_s=30)) for _ in range(2)]
    assert segment(live, TARGET.png, timeout_s=15).status_code == 200
    for thread, answers in polygons:
        thread.join(timeout=30)
        assert_error(answers[0], 413, "image_too_large")


def test_an_aspect_ratio_the_square_input_cannot_use_is_422(live: str) -> None:
    body = assert_error(segment(live, encode(Image.new("RGB", (4000, 30)))), 422, "image_shape_unsupported")
    assert "aspect ratio over the limit of 100:1" in body["detail"]
