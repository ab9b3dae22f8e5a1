"""``/healthz`` (the process answers) and ``/readyz`` (it can serve model requests)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app.dependencies import BackendDep, SettingsDep, default_timeout
from app.errors import error_response, error_responses
from app.schemas import Readiness
from core import metrics
from core.startup import PROGRESS

router = APIRouter(tags=["health"])


@router.get("/healthz", responses=error_responses(503), summary="Liveness")
async def healthz(backend: BackendDep, response: Response) -> dict[str, str]:
    """200 while the process serves HTTP and its background loops run (Redis mode: the reply
    reader and the inbox heartbeat); 503 naming the loop that keeps failing (restart the process)."""
    reason = backend.liveness()
    if reason is not None:
        response.status_code = 503
        return {"error": "unhealthy", "detail": reason}
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses=error_responses(503), summary="Readiness")
async def readyz(backend: BackendDep, settings: SettingsDep) -> Readiness | JSONResponse:
    """200 when the model and its positional basis are loaded (and Redis answers, when configured), with
    the start's advice on the request deadline; 503 naming the reason otherwise, and while the model
    loads, the phase of the start that runs (``startup``: phase, its seconds so far, the phases done)."""
    reason = await backend.readiness()
    if reason is not None:
        starting = PROGRESS.running()
        if starting is None:
            return error_response(503, "model_unavailable", reason)
        detail = (f"{reason}; starting for {starting['elapsed_s']} s, now: {starting['phase']} "
                  f"({starting['detail']}, {starting['phase_s']} s)")
        return JSONResponse({"error": "model_unavailable", "detail": detail, "startup": starting}, status_code=503)
    served = await backend.served_models()
    models = None if served is None else sorted(served)
    return Readiness(ready=True, mode="redis" if settings.redis_url else "embedded", models=models,
                     advice=PROGRESS.advice, request_timeout_s=default_timeout(settings),
                     encoder=None if settings.redis_url else metrics.encoder_runtime())
