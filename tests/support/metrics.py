"""Reading a Prometheus text exposition into ``{"name{label=\"value\",...}": value}``."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[str, float]:
    """Every sample of an exposition, keyed ``name{label="value",...}`` (labels sorted), or ``name``."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def sample_key(name: str, **labels: str) -> str:
    """The key of ``parse`` for ``name`` with ``labels``."""
    text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{text}}}" if text else name


def scrape(port: int) -> dict[str, float]:
    """Every sample of the Prometheus endpoint on ``port`` of localhost."""
    return parse(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)


def total(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` in an exposition."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and (labels or {}).items() <= sample.labels.items()
    )


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples named ``name`` (with these labels) on ``url``/metrics."""
    return total(httpx.get(f"{url}/metrics", timeout=30).text, name, labels)
