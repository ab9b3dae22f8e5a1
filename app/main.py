"""The application factory: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Security
from fastapi.staticfiles import StaticFiles

from app.auth import AuthMiddleware, KeyRing, api_key_header
from app.dependencies import RenderSlots, reject_repeated_fields
from app.errors import install_error_handlers
from app.labelstudio.router import install as install_label_studio
from app.metrics import MetricsMiddleware
from app.middleware import BodyLimitMiddleware, DisconnectMiddleware, JsonCORSMiddleware
from app.routes import health, match, metrics, page, references, segment
from app.routes.page import STATIC_DIR
from app.settings import Settings
from core.serving import InferenceBackend

DESCRIPTION = """Training-free in-context segmentation (INSID3) on a frozen DINOv3 backbone.

Store a reference (image + mask) once with `POST /references`, then segment any number of
targets with `POST /segment` or match points with `POST /match`. Every error is
`{"error": CODE, "detail": ...}`."""

EXPOSED_HEADERS = ["X-Insid3-Area", "X-Insid3-Bbox", "X-Insid3-Score", "Retry-After", "Location"]


def make_backend(settings: Settings) -> InferenceBackend:
    """The Redis worker pool when ``redis_url`` is set, else the engine in this process."""
    if settings.redis_url:
        from workers.client import QueueLimits, RedisBackend

        limits = QueueLimits(settings.max_queue, settings.retry_after_s, settings.reference_ttl_s,
                             settings.request_timeout_s, settings.reference_quota, settings.model_size,
                             settings.image_size)
        return RedisBackend(settings.redis_url, limits)
    from app.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings)


def _reload_on_sighup(keyring: KeyRing) -> None:
    """Re-read the key file on SIGHUP (only possible in the main thread; the mtime check covers the rest)."""
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, keyring.reload)


def _add_middleware(app: FastAPI, settings: Settings, keyring: KeyRing) -> None:
    """Outermost last: metrics, CORS (preflights answered before auth), auth (from the headers,
    before any body is read), the body limit, disconnects."""
    app.add_middleware(DisconnectMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(AuthMiddleware, keyring=keyring, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            JsonCORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "X-Request-Timeout", "Content-Type"], expose_headers=EXPOSED_HEADERS,
        )
    app.add_middleware(MetricsMiddleware)


def create_app(settings: Settings | None = None, backend: InferenceBackend | None = None,
               keyring: KeyRing | None = None) -> FastAPI:
    """The FastAPI app serving ``settings`` (default: from the environment); ``ConfigurationError``
    for unusable API keys."""
    settings = settings or Settings()
    keyring = keyring or KeyRing.of(settings)
    backend = backend or make_backend(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _reload_on_sighup(keyring)
        await backend.start()
        try:
            yield
        finally:
            await backend.close()

    docs = settings.docs != "off"
    app = FastAPI(title="INSID3 serve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.settings = settings
    app.state.backend = backend
    app.state.render_slots = RenderSlots(settings.render_concurrency)
    install_error_handlers(app)
    auth = [Security(api_key_header)] if keyring.enabled else []  # documented only when enforced
    for module in (references, segment, match):
        app.include_router(module.router, dependencies=[*auth, Depends(reject_repeated_fields)])
    install_label_studio(app, auth)
    for module in (health, metrics, page):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_middleware(app, settings, keyring)
    return app
