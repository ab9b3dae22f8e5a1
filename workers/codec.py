"""The wire format of the queue: binary frames, request bodies, replies and remote errors.

A frame is magic, a JSON header (with the blob sizes), then the raw blobs: images and masks
travel as their uploaded bytes, masks in replies as packed bits. A reply names its job id.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import Insid3Error
from core.requests import DEFAULT_TENANT, MatchRequest, ReferenceRequest, Request, SegmentRequest
from core.serving import JobFailed, ReferenceNotFound, StoredReference
from core.types import MatchResult, SegmentationResult

_MAGIC = b"I3F1"


class ProtocolError(Exception):
    """A message that does not follow this protocol (corrupt or from another version)."""


# ------------------------------------------------------------------------------------ frames

def pack(header: Mapping[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    """One binary frame: magic, JSON header (with the blob sizes), then the raw blobs."""
    head = json.dumps({**header, "_blobs": [len(b) for b in blobs]}, separators=(",", ":")).encode()
    return b"".join([_MAGIC, struct.pack("<I", len(head)), head, *blobs])


def unpack(frame: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Inverse of ``pack``; ``ProtocolError`` for anything else."""
    if not frame.startswith(_MAGIC) or len(frame) < 8:
        raise ProtocolError("not an insid3 frame")
    (size,) = struct.unpack_from("<I", frame, 4)
    try:
        header = json.loads(frame[8:8 + size])
        sizes = header.pop("_blobs")
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"corrupt frame header: {exc}") from None
    blobs, offset = [], 8 + size
    for length in sizes:
        blobs.append(frame[offset:offset + length])
        offset += length
    if offset != len(frame):
        raise ProtocolError("frame length does not match its header")
    return header, blobs


# ------------------------------------------------------------------------------- requests


def request_kind(request: Request) -> str:
    """The ``kind`` field of a request's job entry."""
    if isinstance(request, ReferenceRequest):
        return "reference"
    return "segment" if isinstance(request, SegmentRequest) else "match"


def encode_request(request: Request) -> bytes:
    """The ``body`` frame of a job entry."""
    if isinstance(request, ReferenceRequest):
        blobs = [request.image] if request.mask is None else [request.image, request.mask]
        return pack({"name": request.name, "ttl_s": request.ttl_s, "owner": request.owner}, blobs)
    if isinstance(request, SegmentRequest):
        header = {"references": request.reference_ids, "tau": request.tau,
                  "merge_threshold": request.merge_threshold}
        return pack(header, [request.target])
    header = {"reference": request.reference_id, "points": [list(p) for p in request.points],
              "debiased": request.debiased}
    return pack(header, [request.target])


def decode_request(kind: str, body: bytes) -> Request:
    """Inverse of ``encode_request``; ``ProtocolError`` for a corrupt body or unknown kind."""
    header, blobs = unpack(body)
    try:
        if kind == "reference":
            owner = header.get("owner", header.get("tenant", DEFAULT_TENANT))  # "tenant": an API of the last version
            return ReferenceRequest(blobs[0], blobs[1] if len(blobs) > 1 else None, header["name"],
                                    float(header["ttl_s"]), owner=str(owner))
        if kind == "segment":
            return SegmentRequest(blobs[0], [str(r) for r in header["references"]],
                                  header["tau"], header["merge_threshold"])
        if kind == "match":
            points = [(float(x), float(y)) for x, y in header["points"]]
            return MatchRequest(blobs[0], str(header["reference"]), points, bool(header["debiased"]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ProtocolError(f"corrupt {kind} job body: {exc!r}") from None
    raise ProtocolError(f"unknown job kind {kind!r}")


# ------------------------------------------------------------------------------------ replies


@dataclass(frozen=True)
class RemoteError:
    """An error a worker answered with: a ``core.errors`` / ``core.serving`` code and its detail."""

    code: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceCreated:
    """The answer to a reference job: the stored record and whether it was newly created."""

    record: StoredReference
    created: bool


Result = ReferenceCreated | SegmentationResult | MatchResult | RemoteError


def _array(blob: bytes, header: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(blob, dtype=header["dtype"]).reshape(header["shape"]).copy()


def _array_header(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": array.dtype.str, "shape": list(array.shape)}


def encode_reply(job_id: str, result: Result) -> bytes:
    """The inbox message that answers ``job_id``."""
    if isinstance(result, RemoteError):
        return pack({"job": job_id, "type": "error", "code": result.code, "detail": result.detail,
                     "extra": result.extra})
    if isinstance(result, ReferenceCreated):
        return pack({"job": job_id, "type": "reference", "record": result.record.to_json(),
                     "created": result.created})
    if isinstance(result, SegmentationResult):
        mask = np.ascontiguousarray(result.mask, dtype=bool)
        header = {"job": job_id, "type": "segment", "shape": list(mask.shape), "score": result.score,
                  "timings": result.timings}
        return pack(header, [np.packbits(mask).tobytes()])
    points = np.ascontiguousarray(result.points, dtype=np.float32)
    confidence = np.ascontiguousarray(result.confidence, dtype=np.float32)
    header = {"job": job_id, "type": "match", "points": _array_header(points),
              "confidence": _array_header(confidence), "timings": result.timings}
    return pack(header, [points.tobytes(), confidence.tobytes()])


def _unpack_bits(blob: bytes, shape: Sequence[int]) -> np.ndarray:
    count = int(np.prod(shape))
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8), count=count).astype(bool).reshape(shape)


def decode_reply(message: bytes) -> tuple[str, Result]:
    """Inverse of ``encode_reply``: the job id and its result."""
    header, blobs = unpack(message)
    try:
        job_id, kind = str(header["job"]), header["type"]
        if kind == "error":
            return job_id, RemoteError(header["code"], header["detail"], header.get("extra") or {})
        if kind == "reference":
            return job_id, ReferenceCreated(StoredReference.from_json(header["record"]), bool(header["created"]))
        if kind == "segment":
            mask = _unpack_bits(blobs[0], header["shape"])
            return job_id, SegmentationResult(mask, float(header["score"]), header["timings"])
        if kind == "match":
            return job_id, MatchResult(_array(blobs[0], header["points"]),
                                       _array(blobs[1], header["confidence"]), header["timings"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ProtocolError(f"corrupt reply: {exc!r}") from None
    raise ProtocolError(f"unknown reply type {kind!r}")


def error_of(exc: Insid3Error) -> RemoteError:
    """The reply for an engine or backend error (its class is rebuilt from ``code`` by the client)."""
    extra = {"reference_id": exc.reference_id} if isinstance(exc, ReferenceNotFound) else {}
    return RemoteError(exc.code, exc.detail, extra)


def _error_classes() -> dict[str, type[Insid3Error]]:
    """Every ``Insid3Error`` class by code (engine and serving errors)."""
    classes: dict[str, type[Insid3Error]] = {}
    todo: list[type[Insid3Error]] = [Insid3Error]
    while todo:
        cls = todo.pop()
        classes.setdefault(cls.code, cls)
        todo += cls.__subclasses__()
    return classes


def remote_exception(error: RemoteError) -> Insid3Error:
    """The exception a worker's error answer stands for, of the class the worker raised."""
    if error.code == ReferenceNotFound.code and "reference_id" in error.extra:
        return ReferenceNotFound(str(error.extra["reference_id"]))
    cls = _error_classes().get(error.code)
    if cls is not None and cls.__init__ is Insid3Error.__init__:
        return cls(error.detail)
    exc = JobFailed(error.detail)
    exc.code = error.code
    return exc
