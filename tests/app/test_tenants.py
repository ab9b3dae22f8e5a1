"""Tenants of the embedded server: references belong to the tenant whose key created them, quotas,
lifetimes only ever extended, names applied, per-tenant metrics, key rotation without restart."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from tests.app.tenancy import KEYS, clients, cross_tenant_scenario, lifetime_scenario, quota_scenario, write_key_file
from tests.support.api import assert_error
from tests.support.live_server import LiveServer
from tests.support.net import eventually

IMAGE_SIZE = 64
QUOTA = 2


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_key_file(tmp_path_factory.mktemp("keys") / "keys.txt")


@pytest.fixture(scope="module")
def tenants(tiny_checkpoint: Path, key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded server with the key file, references on disk and a quota."""
    workdir = tmp_path_factory.mktemp("tenants")
    settings = Settings(model_size="tiny", weights=str(tiny_checkpoint), image_size=IMAGE_SIZE, device="cpu",
                        basis_cache_dir=workdir / "basis", reference_dir=workdir / "refs",
                        api_keys_file=key_file, reference_quota=QUOTA)
    live = LiveServer(create_app(settings)).start(ready_path="/readyz")
    yield live.url
    live.stop()


def test_two_tenants_never_reach_each_other(tenants: str) -> None:
    cross_tenant_scenario(tenants)


def test_a_lifetime_is_only_extended_and_a_new_name_is_applied(tenants: str) -> None:
    lifetime_scenario(tenants)


def test_quota_is_a_clear_403_and_nothing_is_stored(tenants: str) -> None:
    quota_scenario(tenants, QUOTA)


def test_metrics_are_labelled_by_tenant_and_need_an_admin_key(tenants: str) -> None:
    with clients(tenants)["alpha"] as alpha:
        assert alpha.get("/references").status_code == 200
        assert_error(alpha.get("/metrics"), 401, "unauthorized")
    assert_error(httpx.get(f"{tenants}/metrics"), 401, "unauthorized")
    text = httpx.get(f"{tenants}/metrics", headers={"X-API-Key": KEYS["ops"]}).text
    assert not any(key in text for key in KEYS.values())
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "insid3_http_requests_total"]
    labels = {"route": "/references", "method": "GET", "status": "200", "tenant": "alpha"}
    assert any(labels.items() <= sample.labels.items() for sample in samples)
    assert any(sample.labels["status"] == "401" and sample.labels["tenant"] == "-" for sample in samples)


def test_key_file_changes_apply_without_restart(tenants: str, key_file: Path) -> None:
    original = key_file.read_text()
    try:
        key_file.write_text(original.replace("alpha-key-2", "alpha-key-3"))
        os.utime(key_file, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))

        def rotated() -> bool:
            new = httpx.get(f"{tenants}/references", headers={"X-API-Key": "alpha-key-3"})
            return new.status_code == 200

        eventually(rotated, timeout_s=10)
        assert_error(httpx.get(f"{tenants}/references", headers={"X-API-Key": "alpha-key-2"}), 401)
        key_file.write_text("alpha only-two-fields-expected extra\n")  # broken: the previous keys stay
        os.utime(key_file, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
        time.sleep(1.2)
        assert httpx.get(f"{tenants}/references", headers={"X-API-Key": "alpha-key-3"}).status_code == 200
    finally:
        key_file.write_text(original)
        os.utime(key_file, ns=(time.time_ns(), time.time_ns() + 3_000_000_000))
        eventually(lambda: httpx.get(f"{tenants}/references", headers={"X-API-Key": "alpha-key-2"}).status_code
                   == 200, timeout_s=10)
