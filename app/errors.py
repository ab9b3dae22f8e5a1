"""Every failure becomes ``{"error": CODE, "detail": ...}`` with a meaningful status code."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from core.errors import (
    ConfigurationError,
    EmptyMaskError,
    ImageTooLargeError,
    IncompatibleReferenceError,
    Insid3Error,
    InvalidImageError,
    InvalidInputError,
    MaskShapeError,
    MissingExtraError,
    WeightsError,
)
from core.serving import (
    CorruptReference,
    DeadlineExceeded,
    JobFailed,
    ModelUnavailable,
    QueueFull,
    QuotaExceeded,
    ReferenceNotFound,
    ReferenceStorageFull,
)

log = logging.getLogger("insid3.app")

# Most specific first: the first class an error is an instance of gives its status.
STATUS_BY_ERROR: tuple[tuple[type[Insid3Error], int], ...] = (
    (ReferenceNotFound, 404),
    (CorruptReference, 410),
    (ReferenceStorageFull, 507),
    (QuotaExceeded, 403),
    (QueueFull, 503),
    (DeadlineExceeded, 504),
    (JobFailed, 502),
    (ModelUnavailable, 503),
    (ImageTooLargeError, 413),
    (InvalidImageError, 415),
    (IncompatibleReferenceError, 409),
    (EmptyMaskError, 422),
    (MaskShapeError, 422),
    (InvalidInputError, 422),
    (WeightsError, 503),
    (ConfigurationError, 503),
    (MissingExtraError, 503),
)


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: str = Field(description="Stable machine-readable code, e.g. reference_not_found.")
    detail: Any = Field(description="What went wrong, for humans.")
    errors: list[dict[str, Any]] | None = Field(default=None, description="Per-field problems (validation_error).")


ERROR_DESCRIPTIONS = {
    401: "Missing or invalid X-API-Key (when API keys are on); /metrics: not an admin key (INSID3_METRICS_AUTH).",
    403: "Your tenant holds INSID3_REFERENCE_QUOTA references already (reference_quota_exceeded); nothing was "
         "stored.",
    404: "Unknown, deleted or expired reference, or another tenant's.",
    410: "A stored reference whose data is corrupt; it was dropped, store it again.",
    507: "The reference budget (INSID3_REFERENCE_BUDGET_BYTES) is full; delete references or retry later.",
    409: "Reference encoded by another model or at another image size.",
    413: "Upload over INSID3_MAX_UPLOAD_BYTES, or an image over INSID3_MAX_PIXELS, over 32768 px on a side or "
         "a JPEG of too many scans (decompression and scan bombs).",
    415: "Not an image, or a truncated image.",
    422: "Invalid parameters (a single-valued field given twice included), empty mask, or a mask whose "
         "aspect differs from its image's.",
    502: "Redis mode: the job failed on every try or stalled a worker, and was dead-lettered (job_failed); "
         "retrying would repeat it.",
    503: "Model not ready, Redis unreachable or out of memory (the detail says why), or queue full (with Retry-After).",
    504: "The request's deadline passed; its job was dropped.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


def error_response(status: int, code: str, detail: Any,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error response in the service's one error shape."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def status_of(exc: Insid3Error) -> int:
    """The HTTP status an engine or backend error maps to (500 for an unmapped class)."""
    return next((status for cls, status in STATUS_BY_ERROR if isinstance(exc, cls)), 500)


async def _insid3_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Insid3Error)
    headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))} if isinstance(exc, QueueFull) else None
    status = status_of(exc)
    if status == 500:
        log.error("unmapped engine error on %s: %s", request.url.path, exc.detail)
    return error_response(status, exc.code, exc.detail, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors) or "invalid request"
    return JSONResponse({"error": "validation_error", "detail": summary, "errors": errors}, status_code=422)


def _allowed_methods(request: Request) -> str:
    """Every method some route accepts on this path (Starlette only names the first route's)."""
    methods = {
        method
        for route in request.app.routes
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
        for method in route.methods or ()
    }
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, code, exc.detail, headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", f"unexpected server error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error shape."""
    app.add_exception_handler(Insid3Error, _insid3_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
