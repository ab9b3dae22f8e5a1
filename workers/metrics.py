"""Prometheus metrics of a worker (names are a contract, see docs/architecture.md), and the
worker's HTTP endpoint: ``/metrics`` and ``/healthz`` (503 while a supervised loop keeps failing).

The engine-level metrics (encoder/clustering time, images per encoder pass, reference cache, GPU
memory) come from ``core.metrics`` in the same registry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

from core.metrics import BATCH_BUCKETS, LATENCY_BUCKETS

OUTCOMES = ("processed", "failed", "retried", "reclaimed", "dead_lettered", "expired", "abandoned")

JOBS = Counter(
    "insid3_worker_jobs",
    "Jobs by outcome: processed (answered with a result), failed (answered with an input error), "
    "retried (requeued after an unexpected error), reclaimed (taken over from a dead or stuck worker), "
    "dead_lettered, expired (deadline passed before it ran), abandoned (cancelled by its caller, or "
    "its API process is gone: acknowledged unrun)",
    ["outcome"],
)
for _outcome in OUTCOMES:
    JOBS.labels(outcome=_outcome)

QUEUE_WAIT = Histogram(
    "insid3_worker_queue_wait_seconds", "Time from enqueue to the start of processing",
    buckets=LATENCY_BUCKETS,
)
BATCH_JOBS = Histogram(
    "insid3_worker_batch_jobs", "Jobs run together in one Insid3.run_batch call", buckets=BATCH_BUCKETS
)
LAST_BATCH = Gauge("insid3_worker_last_batch_timestamp_seconds", "Unix time the last batch finished")
LAST_HEARTBEAT = Gauge("insid3_worker_last_heartbeat_timestamp_seconds",
                       "Unix time this worker last renewed its liveness in Redis")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: probes and scrapes come every few seconds."""


def serve_http(port: int, unhealthy: Callable[[], str | None]) -> WSGIServer:
    """Serve ``/metrics`` and ``/healthz`` on ``port`` from a daemon thread."""
    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            reason = unhealthy()
            status = "200 OK" if reason is None else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [(reason or "ok").encode() + b"\n"]
        return metrics_app(environ, start_response)

    server = make_server("", port, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="insid3-metrics", daemon=True).start()
    return server
