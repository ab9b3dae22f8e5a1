"""Tenants in Redis mode: a real redis-server, one ``insid3 worker`` and ``insid3 serve --redis-url``
with a key file; the same cross-tenant scenario as the embedded server, quotas, lifetimes."""

from __future__ import annotations

import time

import httpx
import pytest

from core.requests import DEFAULT_TENANT, ReferenceRequest
from tests.app.tenancy import clients, cross_tenant_scenario, write_key_file
from tests.support.api import assert_error, create_reference
from tests.support.images import REFERENCE, REFERENCE_2, disc_scene
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
    with clients(api)["alpha"] as alpha:
        first = create_reference(alpha, REFERENCE, ttl_s="0", name="forever")
        assert first.status_code == 201, first.text
        ref_id = first.json()["reference_id"]
        again = create_reference(alpha, REFERENCE, ttl_s="0.001", name="renamed")
        assert again.status_code == 200 and again.json()["expires_at"] is None and again.json()["name"] == "renamed"
        time.sleep(0.1)
        info = alpha.get(f"/references/{ref_id}").json()
        assert info["expires_at"] is None and info["name"] == "renamed"
        assert alpha.delete(f"/references/{ref_id}").status_code == 204


def test_quota_is_a_clear_403(api: str) -> None:
    with clients(api)["beta"] as beta:
        created = [create_reference(beta, s).json()["reference_id"] for s in (REFERENCE, REFERENCE_2)]
        extra = disc_scene(7, 96, 96, [(40, 40, 20)])
        body = assert_error(create_reference(beta, extra), 403, "reference_quota_exceeded")
        assert str(QUOTA) in body["detail"]
        assert beta.get("/references").json()["total"] == QUOTA
        for ref_id in created:
            assert beta.delete(f"/references/{ref_id}").status_code == 204
    assert httpx.get(f"{api}/references").status_code == 401


def test_a_reference_job_carries_its_tenant() -> None:
    request = ReferenceRequest(b"image", b"mask", "name", 60.0, tenant="alpha")
    assert decode_request("reference", encode_request(request)) == request
    legacy = pack({"name": None, "ttl_s": 0.0}, [b"image"])  # queued by an API without tenants
    assert decode_request("reference", legacy).tenant == DEFAULT_TENANT
