"""Settings of the HTTP service: the engine's settings plus serving, limits and security.

Every field is settable from the environment as ``INSID3_<FIELD>`` (e.g. ``INSID3_PORT=9000``);
``insid3 serve`` options override the environment. Lists (``api_keys``, ``cors_origins``) are
comma-separated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from core.settings import EngineSettings

CommaList = Annotated[list[str], NoDecode]


class Settings(EngineSettings):
    """Everything ``insid3 serve`` is configured with."""

    host: str = Field("127.0.0.1", description="interface to bind")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port")
    redis_url: str | None = Field(None, description="None: the engine runs in the API process")
    max_batch: int = Field(default=8, ge=1, description="images per encoder pass (embedded mode)")
    max_wait_ms: float = Field(default=5.0, ge=0, description="how long a batch waits to fill up")
    max_queue: int = Field(default=64, ge=0, description="queued jobs before 503 + Retry-After")
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="whole request body")
    max_targets: int = Field(default=16, ge=1, description="target images per /segment request")
    max_shots: int = Field(default=16, ge=1, description="references per /segment request")
    max_points: int = Field(default=1024, ge=1, description="points per /match request")
    render_concurrency: int = Field(default=2, ge=1, description="response renderings at once (all formats)")
    request_timeout_s: float = Field(default=60.0, gt=0, description="deadline of one request (504 after)")
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After of a 503 for a full queue")
    reference_ttl_s: float = Field(default=86_400.0, ge=0, description="default lifetime; 0 = forever")
    inline_reference_ttl_s: float = Field(default=300.0, ge=0, description="lifetime of references uploaded "
                                          "inline with /segment or /match; 0 = forever")
    reference_dir: Path | None = Field(None, description="embedded mode: keep references on disk across restarts")
    api_keys: CommaList = Field(default_factory=list, description="empty: no authentication")
    cors_origins: CommaList = Field(default_factory=list, description="empty: no CORS headers")
    log_level: str = Field("info", description="log level")

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
