"""Settings of the HTTP service: the engine's settings plus serving, limits and security.

Every field is settable from the environment as ``INSID3_<FIELD>`` (e.g. ``INSID3_PORT=9000``);
``insid3 serve`` options override the environment. Lists (``api_keys``, ``cors_origins``) are
comma-separated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from core.defaults import DEFAULT_REQUEST_TIMEOUT_S
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
    request_timeout_s: float = Field(default=DEFAULT_REQUEST_TIMEOUT_S, gt=0, description="deadline of one request "
                                     "(504 after); unset: raised at start when one target takes over a quarter of it")
    retry_after_s: int = Field(default=1, ge=1, description="Retry-After of a 503 for a full queue")
    reference_ttl_s: float = Field(default=86_400.0, ge=0, description="default lifetime; 0 = forever")
    inline_reference_ttl_s: float = Field(default=300.0, ge=0, description="lifetime of references uploaded "
                                          "inline with /segment or /match; 0 = forever")
    reference_dir: Path | None = Field(None, description="embedded mode: keep references on disk across restarts")
    reference_quota: int = Field(default=0, ge=0, description="live references per tenant; 0 = no limit")
    api_keys: CommaList = Field(
        default_factory=list, description="comma-separated KEY (default tenant) or TENANT:KEY; empty: no auth",
    )
    api_keys_file: Path | None = Field(None, description="a file of 'TENANT KEY [admin]' lines, re-read on change")
    metrics_auth: Literal["admin", "public"] = Field(
        "admin", description="with API keys on, /metrics needs an admin key (admin) or nothing (public)",
    )
    docs: Literal["public", "key", "off"] = Field("public", description="/docs, /redoc and /openapi.json")
    cors_origins: CommaList = Field(default_factory=list, description="empty: no CORS headers")
    log_level: str = Field("info", description="log level")
    label_studio_url: str | None = Field(None, description="the Label Studio the /labelstudio backend reads "
                                         "task images from (only from this host)")
    label_studio_token: str | None = Field(None, description="its API token (legacy token or personal "
                                           "access token) for reading images and setting the webhook's auth")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """An empty value turns keys off; a value of only whitespace or with an empty entry (``' '``,
        ``','``, ``' , '``, ``'a,,b'``) is refused rather than silently turning authentication off."""
        if not isinstance(value, str):
            return value
        if not value:
            return []
        keys = [item.strip() for item in value.split(",")]
        if not all(keys):
            raise ValueError("API keys must not be empty: remove the empty entry (or unset INSID3_API_KEYS)")
        return keys
