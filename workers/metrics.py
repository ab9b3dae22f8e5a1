"""Prometheus metrics of a worker (names are a contract, see docs/architecture.md).

The engine-level metrics (encoder/clustering time, images per encoder pass, reference cache, GPU
memory) come from ``core.metrics`` in the same registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from core.metrics import BATCH_BUCKETS, LATENCY_BUCKETS

OUTCOMES = ("processed", "failed", "retried", "reclaimed", "dead_lettered", "expired")

JOBS = Counter(
    "insid3_worker_jobs",
    "Jobs by outcome: processed (answered with a result), failed (answered with an input error), "
    "retried (requeued after an unexpected error), reclaimed (taken over from a dead worker), "
    "dead_lettered, expired (deadline passed before it ran)",
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
