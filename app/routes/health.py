"""``/healthz`` (the process answers) and ``/readyz`` (it can serve model requests)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app.dependencies import BackendDep, SettingsDep
from app.errors import error_response, error_responses
from app.schemas import Readiness

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
    """200 when the model and its positional basis are loaded (and Redis answers, when configured);
    503 naming the reason otherwise."""
    reason = await backend.readiness()
    if reason is not None:
        return error_response(503, "model_unavailable", reason)
    served = await backend.served_models()
    models = None if served is None else sorted(served)
    return Readiness(ready=True, mode="redis" if settings.redis_url else "embedded", models=models)
