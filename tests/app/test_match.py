"""POST /match: reference points land on the same part of the target."""

from __future__ import annotations

import json

import pytest

from tests.app.helpers import assert_error, reference_id
from tests.app.scenes import REFERENCE, TARGET

CENTRE = [90, 70]  # the reference disc's centre (x, y)
TARGET_DISC = (100, 60, 30)  # the target disc (cx, cy, r)


@pytest.fixture(scope="module")
def ref_id(client) -> str:
    return reference_id(client, REFERENCE)


def match(client, data: dict, files: dict | None = None):
    files = {"target": ("t.png", TARGET.png, "image/png"), **(files or {})}
    return client.post("/match", files=files, data=data)


def inside_target_disc(point: dict) -> bool:
    cx, cy, r = TARGET_DISC
    return (point["x"] - cx) ** 2 + (point["y"] - cy) ** 2 < r**2


@pytest.mark.parametrize("debiased", ["true", "false"])
def test_the_disc_centre_lands_on_the_target_disc(client, ref_id, debiased):
    response = match(client, {"reference_id": ref_id, "points": json.dumps([CENTRE, [5, 5]]), "debiased": debiased})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reference_id"] == ref_id
    centre, corner = body["points"]
    assert inside_target_disc(centre)
    assert -1 <= corner["confidence"] <= 1 and -1 <= centre["confidence"] <= 1
    assert body["timings"]["total_ms"] > 0


def test_inline_reference_image_needs_no_mask(client):
    response = match(client, {"points": json.dumps([CENTRE])},
                     {"reference_image": ("r.png", REFERENCE.png, "image/png")})
    assert response.status_code == 200, response.text
    assert inside_target_disc(response.json()["points"][0])


@pytest.mark.parametrize("points", ["[]", "[[1]]", "[[1, 2, 3]]", "not json", '[["a", 1]]', "[[1, NaN]]", "{}"])
def test_malformed_points_are_422(client, ref_id, points):
    assert_error(match(client, {"reference_id": ref_id, "points": points}), 422, "invalid_input")


def test_points_outside_the_reference_are_422(client, ref_id):
    body = assert_error(match(client, {"reference_id": ref_id, "points": "[[200, 10]]"}), 422, "invalid_input")
    assert "200x160" in body["detail"]


def test_exactly_one_reference_is_required(client, ref_id):
    assert_error(match(client, {"points": "[[1, 1]]"}), 422, "invalid_input")
    both = match(client, {"reference_id": ref_id, "points": "[[1, 1]]"},
                 {"reference_image": ("r.png", REFERENCE.png, "image/png")})
    assert_error(both, 422, "invalid_input")


def test_unknown_reference_is_404(client):
    assert_error(match(client, {"reference_id": "f" * 32, "points": "[[1, 1]]"}), 404, "reference_not_found")
