"""POST /match: reference points land on the same part of the target (in-process, real engine);
malformed requests are refused before reaching the backend (fake backend)."""

from __future__ import annotations

import json

import pytest

from tests.support.api import assert_error, match
from tests.support.images import REFERENCE, TARGET

CENTRE = [90, 70]  # the reference disc's centre (x, y)
TARGET_DISC = (100, 60, 30)  # the target disc (cx, cy, r)
INLINE_REFERENCE = {"reference_image": ("r.png", REFERENCE.png, "image/png")}


def inside_target_disc(point: dict) -> bool:
    cx, cy, r = TARGET_DISC
    return (point["x"] - cx) ** 2 + (point["y"] - cy) ** 2 < r**2


@pytest.mark.parametrize("debiased", ["true", "false"])
def test_the_disc_centre_lands_on_the_target_disc(client, ref_id, debiased):
    response = match(client, TARGET, {"reference_id": ref_id, "points": json.dumps([CENTRE, [5, 5]]),
                                      "debiased": debiased})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reference_id"] == ref_id
    centre, corner = body["points"]
    assert inside_target_disc(centre)
    assert -1 <= corner["confidence"] <= 1 and -1 <= centre["confidence"] <= 1
    assert body["timings"]["total_ms"] > 0


def test_inline_reference_image_needs_no_mask(client):
    response = match(client, TARGET, {"points": json.dumps([CENTRE])}, INLINE_REFERENCE)
    assert response.status_code == 200, response.text
    assert inside_target_disc(response.json()["points"][0])


@pytest.mark.parametrize("points", ["[]", "[[1]]", "[[1, 2, 3]]", "not json", '[["a", 1]]', "[[1, NaN]]", "{}"])
def test_malformed_points_are_422(fake, points):
    http, backend = fake
    assert_error(match(http, TARGET, {"reference_id": "r", "points": points}), 422, "invalid_input")
    assert backend.calls == []


def test_points_outside_the_reference_are_422(client, ref_id):
    body = assert_error(match(client, TARGET, {"reference_id": ref_id, "points": "[[200, 10]]"}), 422,
                        "invalid_input")
    assert "200x160" in body["detail"]


def test_exactly_one_reference_is_required(fake):
    http, backend = fake
    assert_error(match(http, TARGET, {"points": "[[1, 1]]"}), 422, "invalid_input")
    both = match(http, TARGET, {"reference_id": "r", "points": "[[1, 1]]"}, INLINE_REFERENCE)
    assert_error(both, 422, "invalid_input")
    assert backend.calls == []


def test_points_reach_the_backend_as_pairs_in_reference_pixels(fake):
    http, backend = fake
    response = match(http, TARGET, {"points": "[[3, 4], [5.5, 6]]", "debiased": "false"}, INLINE_REFERENCE)
    assert response.status_code == 200, response.text
    [(_, (_, _, points, debiased, _))] = [call for call in backend.calls if call[0] == "match"]
    assert points == [(3.0, 4.0), (5.5, 6.0)] and debiased is False
    assert [(p["x"], p["y"]) for p in response.json()["points"]] == points


def test_unknown_reference_is_404(client):
    assert_error(match(client, TARGET, {"reference_id": "f" * 32, "points": "[[1, 1]]"}), 404,
                 "reference_not_found")
