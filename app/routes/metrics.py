"""``/metrics``: Prometheus exposition of the API and (in embedded mode) engine metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from app.dependencies import BackendDep
from app.errors import error_responses
from app.metrics import QUEUE_DEPTH

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "Metrics."},
               **error_responses(401)},
    summary="Prometheus metrics",
)
async def metrics(backend: BackendDep) -> Response:
    """Every metric of this process in the Prometheus text format."""
    QUEUE_DEPTH.set(await backend.queue_depth())
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
