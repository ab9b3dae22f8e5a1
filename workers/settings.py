"""Settings of ``insid3 worker``: the engine's settings plus the queue's.

Every field is settable from the environment as ``INSID3_<FIELD>`` (e.g. ``INSID3_MAX_BATCH``);
command-line options win.
"""

from __future__ import annotations

import os
import socket

from pydantic import Field, model_validator

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
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="/metrics and /healthz; unset: off")
    visibility_timeout_s: float = Field(
        default=30.0, gt=0, description="a stuck (live, heartbeating) worker's jobs are reclaimed after this; keep it "
                                        "above the slowest batch and below the API's request timeout")
    max_attempts: int = Field(default=3, ge=1, description="tries of a job before it is dead-lettered")
    heartbeat_s: float = Field(default=1.0, gt=0, description="liveness renewal period")
    heartbeat_ttl_s: float = Field(
        default=3.0, gt=0, description="a worker whose heartbeat is this old is dead: its jobs are taken over at once")
    reference_budget_bytes: int = Field(
        default=2 << 30, ge=0, description="bytes of reference features kept in Redis (below maxmemory, so jobs "
                                           "always fit); 0: no limit")
    model_key: str | None = Field(
        None, description="the routing key of this worker's model (its stream is insid3:jobs:<key>); unset: "
                          "<model_id>@<image_size>. Pin it where a tool must name the stream (KEDA)")
    log_level: str = Field("info", description="log level")

    @model_validator(mode="after")
    def _heartbeat_outlives_period(self) -> WorkerSettings:
        if self.heartbeat_ttl_s <= self.heartbeat_s:
            raise ValueError(
                f"heartbeat_ttl_s ({self.heartbeat_ttl_s:g}) must exceed heartbeat_s ({self.heartbeat_s:g})")
        return self
