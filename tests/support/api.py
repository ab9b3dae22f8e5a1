"""Requests of the HTTP API tests (any httpx client: in-process ``TestClient`` or a real server)."""

from __future__ import annotations

import httpx
import numpy as np
from pycocotools import mask as coco_mask

from tests.support.images import Scene


def create_reference(client: httpx.Client, scene: Scene, **fields: str) -> httpx.Response:
    """POST /references with the scene's image and mask."""
    files = {"image": ("ref.png", scene.png, "image/png"), "mask": ("mask.png", scene.mask_png, "image/png")}
    return client.post("/references", files=files, data=fields)


def reference_id(client: httpx.Client, scene: Scene) -> str:
    """The id of the scene as a stored reference (created if needed)."""
    response = create_reference(client, scene)
    assert response.status_code in (200, 201), response.text
    return response.json()["reference_id"]


def segment(client: httpx.Client, targets: list[Scene], data: dict[str, object], **kwargs) -> httpx.Response:
    """POST /segment with ``targets`` as the target files."""
    files = [("target", (f"t{i}.png", t.png, "image/png")) for i, t in enumerate(targets)]
    return client.post("/segment", files=files, data=data, **kwargs)


def match(client: httpx.Client, target: Scene, data: dict[str, object], files: dict | None = None) -> httpx.Response:
    """POST /match with ``target`` as the target file (and ``files``, e.g. an inline reference image)."""
    files = {"target": ("t.png", target.png, "image/png"), **(files or {})}
    return client.post("/match", files=files, data=data)


def decode_rle(rle: dict) -> np.ndarray:
    """A response's COCO RLE decoded with pycocotools."""
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response is the JSON error shape with ``status`` (and ``code``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "detail"} and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    return body
