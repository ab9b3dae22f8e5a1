"""Two tenants and an admin against one server: the key file and the cross-tenant scenario that
both serving modes must pass (tests/app/test_tenants.py, tests/workers/test_tenants.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.support.api import assert_error, create_reference, segment
from tests.support.images import REFERENCE, REFERENCE_2, TARGET, Scene, disc_scene

KEYS = {"alpha": "alpha-key-1", "beta": "beta-key-1", "ops": "ops-admin-key"}
ALPHA_SECOND_KEY = "alpha-key-2"


def write_key_file(path: Path) -> Path:
    """alpha (two keys: rotation), beta, and the admin ops."""
    path.write_text(
        "# tenant key [admin]\n"
        f"alpha {KEYS['alpha']}\nalpha {ALPHA_SECOND_KEY}\n\n  # second customer\nbeta {KEYS['beta']}\n"
        f"ops {KEYS['ops']} admin\n"
    )
    return path


def clients(url: str) -> dict[str, httpx.Client]:
    """One HTTP client per tenant (and the admin), each sending its key."""
    return {tenant: httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": key})
            for tenant, key in KEYS.items()}


def match(http: httpx.Client, reference_id: str) -> httpx.Response:
    return http.post("/match", files={"target": ("t.png", TARGET.png, "image/png")},
                     data={"reference_id": reference_id, "points": json.dumps([[90, 70]])})


def _listed(http: httpx.Client) -> list[dict]:
    response = http.get("/references", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _create(http: httpx.Client, scene: Scene, name: str) -> str:
    response = create_reference(http, scene, name=name)
    assert response.status_code == 201, response.text
    return response.json()["reference_id"]


def _cannot_reach(http: httpx.Client, theirs: str, mine: str) -> None:
    """Every way of reaching another tenant's reference is a 404 that names nothing of it."""
    for response in (
        http.get(f"/references/{theirs}"),
        segment(http, [TARGET], {"reference_ids": theirs}),
        segment(http, [TARGET], {"reference_ids": [mine, theirs]}),
        match(http, theirs),
        http.delete(f"/references/{theirs}"),
    ):
        body = assert_error(response, 404, "reference_not_found")
        assert "secret" not in json.dumps(body)


def cross_tenant_scenario(url: str) -> None:
    """alpha and beta upload the same bytes (two references), then each tries every route on the
    other's ids: 0 reads, lists or deletes across tenants; the admin sees both."""
    http = clients(url)
    try:
        ids = {tenant: _create(http[tenant], REFERENCE, f"secret-{tenant}") for tenant in ("alpha", "beta")}
        ids["alpha_2"] = _create(http["alpha"], REFERENCE_2, "secret-alpha-2")
        assert len(set(ids.values())) == 3  # identical bytes from two tenants: two references
        for me, other in (("alpha", "beta"), ("beta", "alpha")):
            _cannot_reach(http[me], ids[other], ids[me])
            if other == "alpha":
                _cannot_reach(http[me], ids["alpha_2"], ids[me])
            listed = _listed(http[me])
            assert {item["owner"] for item in listed} == {me}
            assert f"secret-{other}" not in json.dumps(listed)
            assert http[me].get(f"/references/{ids[me]}").json()["name"] == f"secret-{me}"
            assert segment(http[me], [TARGET], {"reference_ids": ids[me]}).status_code == 200
            assert match(http[me], ids[me]).status_code == 200
        second_key = httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": ALPHA_SECOND_KEY})
        with second_key:
            assert {item["reference_id"] for item in _listed(second_key)} == {ids["alpha"], ids["alpha_2"]}
        everything = {item["reference_id"] for item in _listed(http["ops"])}
        assert set(ids.values()) <= everything
        assert http["ops"].get(f"/references/{ids['beta']}").json()["owner"] == "beta"
        assert http["ops"].delete(f"/references/{ids['alpha_2']}").status_code == 204
        for tenant in ("alpha", "beta"):  # untouched by the other's attempts, deleted by their owner
            assert http[tenant].delete(f"/references/{ids[tenant]}").status_code == 204
        assert not any(item["owner"] in ("alpha", "beta") for item in _listed(http["ops"]))
    finally:
        for client in http.values():
            client.close()


def lifetime_scenario(url: str) -> None:
    """Re-uploading extends a lifetime (never shortens it) and applies a new name; no name keeps it."""
    with clients(url)["alpha"] as alpha:
        first = create_reference(alpha, REFERENCE, ttl_s="0", name="forever")
        assert first.status_code == 201, first.text
        ref_id = first.json()["reference_id"]
        again = create_reference(alpha, REFERENCE, ttl_s="0.001", name="renamed")
        assert again.status_code == 200 and again.json()["expires_at"] is None
        assert again.json()["name"] == "renamed"
        time.sleep(0.1)
        info = alpha.get(f"/references/{ref_id}").json()
        assert info["expires_at"] is None and info["name"] == "renamed"
        assert create_reference(alpha, REFERENCE).json()["name"] == "renamed"  # no name given: kept
        assert alpha.delete(f"/references/{ref_id}").status_code == 204


def quota_scenario(url: str, quota: int) -> None:
    """At the quota, creating (also inline) is a 403 and stores nothing; the quota is per tenant."""
    with clients(url)["beta"] as beta:
        created = [create_reference(beta, s).json()["reference_id"] for s in (REFERENCE, REFERENCE_2)]
        extra = disc_scene(7, 96, 96, [(40, 40, 20)])
        body = assert_error(create_reference(beta, extra), 403, "reference_quota_exceeded")
        assert str(quota) in body["detail"]
        inline = beta.post("/segment", files=[("target", ("t", TARGET.png, "image/png")),
                                              ("reference_image", ("r", extra.png, "image/png")),
                                              ("reference_mask", ("m", extra.mask_png, "image/png"))])
        assert_error(inline, 403, "reference_quota_exceeded")
        assert beta.get("/references").json()["total"] == quota
        with clients(url)["alpha"] as alpha:  # the quota is per tenant
            alpha_id = create_reference(alpha, extra).json()["reference_id"]
            assert alpha.delete(f"/references/{alpha_id}").status_code == 204
        assert beta.delete(f"/references/{created[0]}").status_code == 204
        assert create_reference(beta, extra).status_code == 201
        for item in beta.get("/references").json()["items"]:
            beta.delete(f"/references/{item['reference_id']}")
