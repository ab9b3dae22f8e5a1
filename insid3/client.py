"""A Python client of the insid3 HTTP API: ``Client`` and its async twin ``AsyncClient``.

```
from insid3.client import Client

with Client("http://localhost:8000", api_key=None) as client:
    ref = client.add_reference("cat.jpg", "cat_mask.png", name="cat")
    [result] = client.segment("other_cat.jpg", references=[ref.reference_id])
    result.mask, result.score, result.bbox            # (H, W) bool at the target's size
```

Images and masks may be paths, bytes, PIL images or numpy arrays. Errors are ``ClientError``s
carrying the API's stable ``code`` (e.g. ``reference_not_found``), the HTTP ``status``, the
``detail`` and the ``request_id``. Connection errors and 503s (honouring ``Retry-After``) are
retried with backoff within the call's deadline (``timeout``), which is also sent to the server as
``X-Request-Timeout`` so that it drops work nobody waits for any more.

This module needs only httpx, numpy and pillow: it imports neither torch nor the engine.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ImageLike = str | Path | bytes | bytearray | Image.Image | np.ndarray
RETRY_STATUSES = frozenset({502, 503})  # 503: queue full, model loading, Redis unreachable; 502: a proxy
FINAL_CODES = frozenset({"job_failed"})  # the service's own 502: a dead-lettered job, which a retry would repeat
MAX_BACKOFF_S = 10.0
PAGE_SIZE = 1000


class ClientError(Exception):
    """A failed call: the API's ``error`` code, the HTTP status (None: no answer), detail and request id."""

    def __init__(self, code: str, detail: str, status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {detail}" if status is None else f"{status} {code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status
        self.request_id = request_id


class ConnectionFailed(ClientError):
    """The service could not be reached (or did not answer) within the retries and the deadline."""


# ----------------------------------------------------------------------------------------- values


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """A COCO compressed RLE ``{"size": [h, w], "counts": str}`` as an (h, w) bool array
    (what ``pycocotools.mask.decode`` returns, without needing pycocotools)."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            chunk = data[position] - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    flat = np.zeros(height * width, dtype=bool)
    starts = np.cumsum([0, *runs[:-1]])
    for start, length in zip(starts[1::2], runs[1::2], strict=False):
        flat[start:start + length] = True
    return flat.reshape((width, height)).T  # column-major, as COCO stores it


@dataclass(frozen=True)
class Reference:
    """A stored reference, as ``POST/GET /references`` describe it."""

    reference_id: str
    width: int
    height: int
    mask_area: int
    model: str
    image_size: int
    name: str | None = None
    created_at: str | None = None
    expires_at: str | None = None
    owner: str | None = None

    @classmethod
    def of(cls, body: dict[str, Any]) -> Reference:
        return cls(**{name: body.get(name) for name in cls.__dataclass_fields__})


class _Masked:
    """A value carrying a COCO RLE, decoded into ``.mask`` on first use."""

    rle: dict[str, Any]

    @cached_property
    def mask(self) -> np.ndarray:
        """(H, W) bool at the target's size."""
        return decode_rle(self.rle)


@dataclass
class Instance(_Masked):
    """One connected component of a prediction."""

    rle: dict[str, Any]
    area: int
    bbox: list[int]


@dataclass
class SegmentResult(_Masked):
    """The prediction for one target."""

    rle: dict[str, Any]
    width: int
    height: int
    area: int
    score: float
    bbox: list[int] | None = None
    filename: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    instances: list[Instance] | None = None

    @classmethod
    def of(cls, body: dict[str, Any]) -> SegmentResult:
        instances = body.get("instances")
        return cls(
            rle=body["rle"], width=body["width"], height=body["height"], area=body["area"], score=body["score"],
            bbox=body.get("bbox"), filename=body.get("filename"), timings=body.get("timings", {}),
            instances=None if instances is None else [Instance(i["rle"], i["area"], i["bbox"]) for i in instances],
        )


@dataclass(frozen=True)
class MatchResult:
    """Target points (N, 2) in target pixels, in the order of the query points, with a confidence each."""

    points: np.ndarray
    confidence: np.ndarray


def image_bytes(image: ImageLike) -> bytes:
    """The bytes to upload for an image or mask: a file's own bytes, else a PNG (a bool array as 0/255)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        array = image.astype(np.uint8) * 255 if image.dtype == bool else image
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _upload_name(image: ImageLike, default: str) -> str:
    return Path(image).name if isinstance(image, (str, Path)) else default


# ---------------------------------------------------------------------------------- the requests


@dataclass
class _Call:
    """One API call: what to send, and how to read a successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any] | None = None
    data: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes]]] | None = None
    params: dict[str, Any] | None = None

    def result(self, response: httpx.Response) -> Any:
        return self.parse(response) if self.parse else None


def _add_reference(image: ImageLike, mask: ImageLike, name: str | None, ttl_s: float | None) -> _Call:
    data = {key: value for key, value in (("name", name), ("ttl_s", ttl_s)) if value is not None}
    files = [("image", (_upload_name(image, "image.png"), image_bytes(image))),
             ("mask", (_upload_name(mask, "mask.png"), image_bytes(mask)))]
    return _Call("POST", "/references", lambda r: Reference.of(r.json()), data, files)


def _segment(targets: ImageLike | Sequence[ImageLike], references: Sequence[str], tau: float | None,
             merge_threshold: float | None, instances: bool) -> _Call:
    items = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    data: dict[str, Any] = {"reference_ids": list(references), "format": "rle", "instances": str(instances).lower()}
    data.update({key: value for key, value in (("tau", tau), ("merge_threshold", merge_threshold))
                 if value is not None})
    files = [("target", (_upload_name(t, f"target-{i}.png"), image_bytes(t))) for i, t in enumerate(items)]
    return _Call("POST", "/segment", lambda r: [SegmentResult.of(b) for b in r.json()["results"]], data, files)


def _match(target: ImageLike, reference_id: str, points: Sequence[Sequence[float]], debiased: bool) -> _Call:
    data = {"reference_id": reference_id, "points": json.dumps([[float(x), float(y)] for x, y in points]),
            "debiased": str(debiased).lower()}
    return _Call("POST", "/match", _match_result, data, [("target", (_upload_name(target, "target.png"),
                                                                     image_bytes(target)))])


def _match_result(response: httpx.Response) -> MatchResult:
    points = response.json()["points"]
    return MatchResult(np.array([[p["x"], p["y"]] for p in points], dtype=np.float32).reshape(-1, 2),
                       np.array([p["confidence"] for p in points], dtype=np.float32))


def _page(offset: int) -> _Call:
    return _Call("GET", "/references", lambda r: r.json(), params={"offset": offset, "limit": PAGE_SIZE})


def _collect(items: list[Reference], page: dict[str, Any]) -> bool:
    """Add one page of ``GET /references`` to ``items``; whether more pages follow."""
    items += [Reference.of(body) for body in page["items"]]
    return bool(page["items"]) and len(items) < page["total"]


# --------------------------------------------------------------------------------- retries


class _Attempts:
    """When to try a call again: connection errors and 503/502, with exponential backoff (or the
    server's ``Retry-After``), while retries are left and the wait ends before the deadline."""

    def __init__(self, retries: int, timeout_s: float, backoff_s: float) -> None:
        self.left = retries
        self.tried = 0
        self.deadline = time.monotonic() + timeout_s
        self.backoff_s = backoff_s
        self.request_id = uuid.uuid4().hex

    def headers(self) -> dict[str, str]:
        """The request id and the time left, which the server takes as the request's deadline."""
        return {"X-Request-Id": self.request_id, "X-Request-Timeout": f"{max(self.remaining(), 0.001):.3f}"}

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def after_response(self, response: httpx.Response) -> float | None:
        """None when ``response`` is the answer (a success); the seconds to wait before trying again;
        or the ``ClientError`` it carries raised when it is final."""
        if response.is_success:
            return None
        error = self._error(response)
        if response.status_code not in RETRY_STATUSES or error.code in FINAL_CODES:
            raise error
        return self._wait(error, _retry_after(response))

    def after_failure(self, exc: httpx.TransportError) -> float:
        """The seconds to wait after a connection error, or ``ConnectionFailed`` when out of tries."""
        return self._wait(ConnectionFailed("connection_error", f"{type(exc).__name__}: {exc}",
                                           request_id=self.request_id), None)

    def _wait(self, error: ClientError, retry_after: float | None) -> float:
        delay = self.backoff_s * 2**self.tried if retry_after is None else retry_after
        delay = min(delay, MAX_BACKOFF_S) * random.uniform(1.0, 1.5)  # jitter: concurrent callers spread out
        if self.left <= 0 or delay >= self.remaining():
            raise error
        self.left -= 1
        self.tried += 1
        return delay

    def _error(self, response: httpx.Response) -> ClientError:
        try:
            body = response.json()
            code, detail = str(body["error"]), body.get("detail", "")
        except (ValueError, KeyError, TypeError):
            code, detail = f"http_{response.status_code}", response.text[:500]
        request_id = response.headers.get("X-Request-Id", self.request_id)
        return ClientError(code, detail if isinstance(detail, str) else json.dumps(detail), response.status_code,
                           request_id)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


class _Base:
    """What both clients hold: where the service is, the key, and the retry settings."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0, retries: int = 8,
                 backoff_s: float = 0.25) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self._headers = {"X-API-Key": api_key} if api_key else {}

    def _attempts(self, timeout: float | None) -> _Attempts:
        return _Attempts(self.retries, self.timeout if timeout is None else timeout, self.backoff_s)

    def _request_options(self, call: _Call, attempts: _Attempts) -> dict[str, Any]:
        return {"method": call.method, "url": call.path, "data": call.data, "files": call.files,
                "params": call.params, "headers": attempts.headers(),
                "timeout": httpx.Timeout(max(attempts.remaining(), 0.001) + 5.0, connect=10.0)}


class Client(_Base):
    """The synchronous client (thread-safe: one connection pool shared by every call)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0, retries: int = 8,
                 backoff_s: float = 0.25) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff_s)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call, timeout: float | None = None) -> Any:
        attempts = self._attempts(timeout)
        while True:
            try:
                response = self._http.request(**self._request_options(call, attempts))
            except httpx.TransportError as exc:
                delay = attempts.after_failure(exc)
            else:
                delay = attempts.after_response(response)
                if delay is None:
                    return call.result(response)
            time.sleep(delay)

    def add_reference(self, image: ImageLike, mask: ImageLike, name: str | None = None,
                      ttl_s: float | None = None, timeout: float | None = None) -> Reference:
        """Encode and store a reference (the same image and mask give the same id)."""
        return self._run(_add_reference(image, mask, name, ttl_s), timeout)

    def get_reference(self, reference_id: str, timeout: float | None = None) -> Reference:
        return self._run(_Call("GET", f"/references/{reference_id}", lambda r: Reference.of(r.json())), timeout)

    def list_references(self, timeout: float | None = None) -> list[Reference]:
        """Every reference of yours (all pages), newest first."""
        items: list[Reference] = []
        while _collect(items, self._run(_page(len(items)), timeout)):
            pass
        return items

    def delete_reference(self, reference_id: str, timeout: float | None = None) -> None:
        self._run(_Call("DELETE", f"/references/{reference_id}"), timeout)

    def segment(self, targets: ImageLike | Sequence[ImageLike], references: Sequence[str], tau: float | None = None,
                merge_threshold: float | None = None, instances: bool = False,
                timeout: float | None = None) -> list[SegmentResult]:
        """One result per target (a list or tuple of images, or one image), in order."""
        return self._run(_segment(targets, references, tau, merge_threshold, instances), timeout)

    def match(self, target: ImageLike, reference_id: str, points: Sequence[Sequence[float]],
              debiased: bool = True, timeout: float | None = None) -> MatchResult:
        """The target points matching ``points`` ((x, y) in the reference's pixels)."""
        return self._run(_match(target, reference_id, points, debiased), timeout)


class AsyncClient(_Base):
    """The asyncio twin of ``Client``: the same methods, awaited."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0, retries: int = 8,
                 backoff_s: float = 0.25, max_connections: int = 100) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff_s)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                       limits=httpx.Limits(max_connections=max_connections))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call, timeout: float | None = None) -> Any:
        attempts = self._attempts(timeout)
        while True:
            try:
                response = await self._http.request(**self._request_options(call, attempts))
            except httpx.TransportError as exc:
                delay = attempts.after_failure(exc)
            else:
                delay = attempts.after_response(response)
                if delay is None:
                    return call.result(response)
            await asyncio.sleep(delay)

    async def add_reference(self, image: ImageLike, mask: ImageLike, name: str | None = None,
                            ttl_s: float | None = None, timeout: float | None = None) -> Reference:
        return await self._run(_add_reference(image, mask, name, ttl_s), timeout)

    async def get_reference(self, reference_id: str, timeout: float | None = None) -> Reference:
        return await self._run(_Call("GET", f"/references/{reference_id}", lambda r: Reference.of(r.json())),
                               timeout)

    async def list_references(self, timeout: float | None = None) -> list[Reference]:
        items: list[Reference] = []
        while _collect(items, await self._run(_page(len(items)), timeout)):
            pass
        return items

    async def delete_reference(self, reference_id: str, timeout: float | None = None) -> None:
        await self._run(_Call("DELETE", f"/references/{reference_id}"), timeout)

    async def segment(self, targets: ImageLike | Sequence[ImageLike], references: Sequence[str],
                      tau: float | None = None, merge_threshold: float | None = None, instances: bool = False,
                      timeout: float | None = None) -> list[SegmentResult]:
        return await self._run(_segment(targets, references, tau, merge_threshold, instances), timeout)

    async def match(self, target: ImageLike, reference_id: str, points: Sequence[Sequence[float]],
                    debiased: bool = True, timeout: float | None = None) -> MatchResult:
        return await self._run(_match(target, reference_id, points, debiased), timeout)
