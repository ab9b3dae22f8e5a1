"""Prometheus metrics of the engine, exported by whichever process runs it (API or worker).

The names are a contract with the dashboards and alert rules in deploy/ (docs/architecture.md).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import torch
from prometheus_client import REGISTRY, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.cache import ReferenceCache

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)

ENCODER_SECONDS = Histogram(
    "insid3_encoder_seconds", "Wall time of one backbone pass over a batch of images", buckets=LATENCY_BUCKETS
)
CLUSTERING_SECONDS = Histogram(
    "insid3_clustering_seconds", "Wall time of the clustering of one target", buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram("insid3_batch_size", "Images per backbone pass", buckets=BATCH_BUCKETS)
GPU_MEMORY_BYTES = Gauge("insid3_gpu_memory_bytes", "CUDA memory allocated by this process", ["device"])

_caches: weakref.WeakSet[ReferenceCache] = weakref.WeakSet()


class _ReferenceCacheCollector(Collector):
    """Reads the counters of every live reference cache of this process at scrape time."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        caches = list(_caches)
        for name, attribute, documentation in (
            ("insid3_reference_cache_hits", "hits", "Reference-cache lookups that found the features"),
            ("insid3_reference_cache_misses", "misses", "Reference-cache lookups that had to encode"),
            ("insid3_reference_cache_evictions", "evictions", "Entries evicted to stay within the byte budget"),
        ):
            yield CounterMetricFamily(name, documentation, value=sum(getattr(c, attribute) for c in caches))
        yield GaugeMetricFamily(
            "insid3_reference_cache_bytes", "Bytes held by the reference cache", value=sum(c.bytes for c in caches)
        )


REGISTRY.register(_ReferenceCacheCollector())


def track_cache(cache: ReferenceCache) -> None:
    """Export ``cache``'s counters for as long as it lives."""
    _caches.add(cache)


def update_gpu_memory(device: torch.device) -> None:
    """Refresh the GPU memory gauge (no-op off CUDA)."""
    if device.type == "cuda":
        GPU_MEMORY_BYTES.labels(device=str(device)).set(torch.cuda.memory_allocated(device))


ENCODER_RUNTIME = Gauge("insid3_encoder_runtime_info", "The encoder runtime this process runs (1)",
                        ["runtime", "precision", "chosen_by"])
ENCODER_MEASURED_MS = Gauge("insid3_encoder_runtime_measured_ms", "Encoder ms per image of each candidate "
                            "runtime, as auto measured them", ["runtime", "precision", "exact"])
_encoder_runtime: dict[str, object] | None = None


def record_encoder_runtime(summary: dict) -> None:
    """Export the engine's encoder runtime and, when ``auto`` measured it, every candidate's time."""
    global _encoder_runtime
    _encoder_runtime = summary
    ENCODER_RUNTIME.clear()
    ENCODER_RUNTIME.labels(runtime=summary["runtime"], precision=summary["precision"],
                           chosen_by=summary["chosen_by"]).set(1)
    ENCODER_MEASURED_MS.clear()
    for measured in summary.get("measurements", []):
        if measured["ms"] is not None:
            ENCODER_MEASURED_MS.labels(runtime=measured["runtime"], precision=measured["precision"],
                                       exact=str(measured["exact"]).lower()).set(measured["ms"])


def encoder_runtime() -> dict[str, object] | None:
    """The summary last recorded by ``record_encoder_runtime`` in this process (None: no engine here)."""
    return _encoder_runtime
