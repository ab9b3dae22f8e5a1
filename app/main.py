"""The application factory: ``create_app(settings)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app.dependencies import RenderSlots, reject_repeated_fields, require_api_key
from app.errors import install_error_handlers
from app.metrics import MetricsMiddleware
from app.middleware import BodyLimitMiddleware, DisconnectMiddleware
from app.routes import health, match, metrics, page, references, segment
from app.routes.page import STATIC_DIR
from app.settings import Settings
from core.serving import InferenceBackend

DESCRIPTION = """Training-free in-context segmentation (INSID3) on a frozen DINOv3 backbone.

Store a reference (image + mask) once with `POST /references`, then segment any number of
targets with `POST /segment` or match points with `POST /match`. Every error is
`{"error": CODE, "detail": ...}`."""


def make_backend(settings: Settings) -> InferenceBackend:
    """The Redis worker pool when ``redis_url`` is set, else the engine in this process."""
    if settings.redis_url:
        from workers.client import QueueLimits, RedisBackend

        limits = QueueLimits(settings.max_queue, settings.retry_after_s, settings.reference_ttl_s,
                             settings.request_timeout_s, settings.model_size, settings.image_size)
        return RedisBackend(settings.redis_url, limits)
    from app.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings)


def create_app(settings: Settings | None = None, backend: InferenceBackend | None = None) -> FastAPI:
    """The FastAPI app serving ``settings`` (default: from the environment)."""
    settings = settings or Settings()
    backend = backend or make_backend(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await backend.start()
        try:
            yield
        finally:
            await backend.close()

    app = FastAPI(title="INSID3 serve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.backend = backend
    app.state.render_slots = RenderSlots(settings.render_concurrency)
    install_error_handlers(app)
    auth = [Depends(require_api_key)] if settings.api_keys else []  # documented only when enforced
    for module in (references, segment, match):
        app.include_router(module.router, dependencies=[*auth, Depends(reject_repeated_fields)])
    for module in (health, metrics, page):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(DisconnectMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "X-Request-Timeout", "Content-Type"], expose_headers=["Retry-After"],
        )
    app.add_middleware(MetricsMiddleware)
    return app
