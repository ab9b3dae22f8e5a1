"""Tenants in Redis mode: a real redis-server, one ``insid3 worker`` and ``insid3 serve --redis-url``
with a key file; the same cross-tenant scenario as the embedded server, quotas, lifetimes."""

from __future__ import annotations

import httpx
import pytest

from core.requests import DEFAULT_TENANT, ReferenceRequest
from tests.app.tenancy import clients, cross_tenant_scenario, lifetime_scenario, quota_scenario, write_key_file
from tests.support.api import create_reference
from tests.support.images import REFERENCE
from tests.support.net import free_port
from tests.workers.helpers import Launcher
from workers.codec import decode_request, encode_request, pack

QUOTA = 2


@pytest.fixture(scope="module")
def api(launcher: Launcher, tmp_path_factory: pytest.TempPathFactory) -> str:
    keys = write_key_file(tmp_path_factory.mktemp("keys") / "keys.txt")
    launcher.worker("tenants-w1", free_port())
    port = free_port()
    launcher.api(port, INSID3_API_KEYS_FILE=str(keys), INSID3_REFERENCE_QUOTA=str(QUOTA))
    return f"http://127.0.0.1:{port}"


def test_two_tenants_never_reach_each_other(api: str) -> None:
    cross_tenant_scenario(api)


def test_tenant_listings_live_in_their_own_sets(api: str, launcher: Launcher) -> None:
    with clients(api)["alpha"] as alpha:
        ref_id = create_reference(alpha, REFERENCE).json()["reference_id"]
        assert launcher.redis.zscore("insid3:tenant:alpha:refs", ref_id) is not None
        assert launcher.redis.zscore("insid3:tenant:beta:refs", ref_id) is None
        assert alpha.delete(f"/references/{ref_id}").status_code == 204
        assert launcher.redis.zscore("insid3:tenant:alpha:refs", ref_id) is None


def test_a_lifetime_is_only_extended_and_a_new_name_is_applied(api: str) -> None:
    lifetime_scenario(api)


def test_quota_is_a_clear_403_and_nothing_is_stored(api: str) -> None:
    quota_scenario(api, QUOTA)
    assert httpx.get(f"{api}/references").status_code == 401


def test_a_reference_job_carries_its_owner() -> None:
    request = ReferenceRequest(b"image", b"mask", "name", 60.0, owner="alpha")
    assert decode_request("reference", encode_request(request)) == request
    legacy = pack({"name": None, "ttl_s": 0.0}, [b"image"])  # queued by an API without tenants
    assert decode_request("reference", legacy).owner == DEFAULT_TENANT
    before_owners = pack({"name": None, "ttl_s": 0.0, "tenant": "alpha"}, [b"image"])  # an API of the last version
    assert decode_request("reference", before_owners).owner == "alpha"
