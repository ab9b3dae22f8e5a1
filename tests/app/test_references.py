"""/references: create (content-hash ids), get, list, delete, expiry."""

from __future__ import annotations

from tests.app.conftest import failed_request_cleanup
from tests.support.api import assert_error, create_reference
from tests.support.images import REFERENCE, REFERENCE_2, disc_scene
from tests.support.net import eventually


def test_create_returns_201_then_200_with_the_same_id(client):
    fresh = disc_scene(100, 90, 120, [(40, 50, 20)])
    first = create_reference(client, fresh, name="disc")
    assert first.status_code == 201, first.text
    info = first.json()
    assert set(info) == {"reference_id", "name", "width", "height", "mask_area", "model", "image_size",
                         "created_at", "expires_at", "owner"}
    assert info["owner"] == "default"  # API keys off: one default tenant
    assert (info["width"], info["height"], info["name"]) == (120, 90, "disc")
    assert info["mask_area"] == int(fresh.mask.sum())
    assert info["model"].startswith("dinov3_vits16-") and info["image_size"] == 128
    assert first.headers["location"] == f"/references/{info['reference_id']}"
    second = create_reference(client, fresh)
    assert second.status_code == 200
    assert second.json()["reference_id"] == info["reference_id"]


def test_different_inputs_give_different_ids(client):
    ids = {create_reference(client, s).json()["reference_id"] for s in (REFERENCE, REFERENCE_2)}
    assert len(ids) == 2


def test_get_list_delete(client):
    reference_id = create_reference(client, disc_scene(101, 80, 80, [(40, 40, 15)])).json()["reference_id"]
    got = client.get(f"/references/{reference_id}")
    assert got.status_code == 200 and got.json()["reference_id"] == reference_id
    page = client.get("/references", params={"limit": 1000}).json()
    assert reference_id in [item["reference_id"] for item in page["items"]]
    assert page["total"] >= 1 and page["offset"] == 0 and page["limit"] == 1000
    assert client.delete(f"/references/{reference_id}").status_code == 204
    assert_error(client.get(f"/references/{reference_id}"), 404, "reference_not_found")
    assert_error(client.delete(f"/references/{reference_id}"), 404, "reference_not_found")


def test_pagination_is_newest_first_and_consistent(client):
    for seed in range(3):
        create_reference(client, disc_scene(200 + seed, 64, 64, [(32, 32, 10)]))
    everything = client.get("/references", params={"limit": 1000}).json()
    first = client.get("/references", params={"offset": 0, "limit": 2}).json()
    second = client.get("/references", params={"offset": 2, "limit": 2}).json()
    assert len(first["items"]) == 2 and first["total"] == everything["total"]
    ids = [item["reference_id"] for item in everything["items"]]
    assert [item["reference_id"] for item in first["items"] + second["items"]] == ids[:4]
    created = [item["created_at"] for item in everything["items"]]
    assert created == sorted(created, reverse=True)


def test_reference_expires_after_its_ttl(client):
    response = create_reference(client, disc_scene(102, 70, 70, [(30, 30, 12)]), ttl_s="0.5")
    assert response.status_code == 201
    reference_id = response.json()["reference_id"]
    assert response.json()["expires_at"] is not None
    eventually(lambda: client.get(f"/references/{reference_id}").status_code == 404, 30, "the reference to expire")
    assert_error(client.get(f"/references/{reference_id}"), 404, "reference_not_found")
    ids = [item["reference_id"] for item in client.get("/references", params={"limit": 1000}).json()["items"]]
    assert reference_id not in ids


def test_ttl_zero_never_expires(client):
    response = create_reference(client, disc_scene(103, 70, 70, [(30, 30, 12)]), ttl_s="0")
    assert response.status_code == 201 and response.json()["expires_at"] is None


def test_a_failed_request_deletes_only_the_inline_reference_it_created(client):
    assert failed_request_cleanup(client, disc_scene(101, 90, 120, [(45, 60, 20)]), stored_meanwhile=False) == 404
    assert failed_request_cleanup(client, disc_scene(102, 90, 120, [(45, 60, 20)]), stored_meanwhile=True) == 200
