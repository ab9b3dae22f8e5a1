"""Dependencies injected into the routes: settings, the backend, authentication, deadlines."""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from app.settings import Settings
from core.serving import InferenceBackend

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Needed when INSID3_API_KEYS is set.")


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_backend(request: Request) -> InferenceBackend:
    """The backend running the engine (embedded or Redis workers)."""
    return request.app.state.backend


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendDep = Annotated[InferenceBackend, Depends(get_backend)]


def require_api_key(settings: SettingsDep, api_key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """401 unless API keys are off or the X-API-Key header holds one of them."""
    if not settings.api_keys:
        return
    if api_key is None or not any(hmac.compare_digest(api_key, key) for key in settings.api_keys):
        raise HTTPException(401, "a valid X-API-Key header is required", headers={"WWW-Authenticate": "X-API-Key"})


def request_deadline(
    settings: SettingsDep,
    timeout: Annotated[
        float | None,
        Header(
            alias="X-Request-Timeout", gt=0,
            description="Seconds; shortens (never extends) INSID3_REQUEST_TIMEOUT_S.",
        ),
    ] = None,
) -> float:
    """The absolute Unix time by which the request must be answered (else 504)."""
    seconds = settings.request_timeout_s if timeout is None else min(timeout, settings.request_timeout_s)
    return time.time() + seconds


DeadlineDep = Annotated[float, Depends(request_deadline)]
