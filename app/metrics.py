"""Prometheus metrics of the HTTP layer (names are a contract, see docs/architecture.md).

Engine-level metrics (encoder/clustering time, batch sizes, reference cache, GPU memory) are
registered by ``core.metrics`` in the same default registry and exported by ``GET /metrics``.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import tenant_label

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

HTTP_REQUESTS = Counter(
    "insid3_http_requests", "HTTP requests answered.", ["route", "method", "status", "tenant"]
)
HTTP_DURATION = Histogram(
    "insid3_http_request_duration_seconds", "Time to answer an HTTP request.", ["route", "method", "tenant"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("insid3_http_requests_in_flight", "HTTP requests being answered.")
QUEUE_DEPTH = Gauge("insid3_queue_depth", "Jobs waiting to run (embedded queue or Redis backlog).")

UNMATCHED_ROUTE = "<unmatched>"


class MetricsMiddleware:
    """Counts requests and observes their latency per route template, method, status and tenant
    (the tenant id ``app.auth`` resolved, ``-`` when unauthenticated; never the key)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            HTTP_IN_FLIGHT.dec()
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            method, tenant = scope["method"], tenant_label(scope)
            HTTP_REQUESTS.labels(route, method, str(status), tenant).inc()
            HTTP_DURATION.labels(route, method, tenant).observe(time.perf_counter() - started)
