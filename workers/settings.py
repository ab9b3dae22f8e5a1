"""Settings of ``insid3 worker``: the engine's settings plus the queue's.

Every field is settable from the environment as ``INSID3_<FIELD>`` (e.g. ``INSID3_MAX_BATCH``);
command-line options win.
"""

from __future__ import annotations

import os
import socket

from pydantic import Field

from core.settings import EngineSettings


def default_name() -> str:
    """``host-pid``: unique per process, readable in ``insid3 queue stats``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(EngineSettings):
    """Everything ``insid3 worker`` is configured with."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    name: str = Field(default_factory=default_name, description="the consumer name in the group")
    max_batch: int = Field(default=8, ge=1, description="jobs per encoder pass")
    max_wait_ms: float = Field(default=10.0, ge=0, description="how long a batch waits to fill after its first job")
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="Prometheus endpoint; None: off")
    visibility_timeout_s: float = Field(default=120.0, gt=0, description="idle pending jobs are reclaimed after this")
    max_attempts: int = Field(default=3, ge=1, description="tries of a job before it is dead-lettered")
    heartbeat_s: float = Field(default=2.0, gt=0, description="liveness renewal period")
    log_level: str = Field("info", description="log level")
