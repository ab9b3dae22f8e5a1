"""Bad input: always the JSON error shape with the right status, never a 500. Errors found by the
engine (images, masks, references) on the real in-process engine; errors of the HTTP layer
(validation, limits of the request) on the fake backend, which they must never reach."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from app.errors import status_of
from core.errors import Insid3Error
from core.serving import BackendError
from tests.support.api import assert_error, create_reference, match, segment
from tests.support.images import REFERENCE, TARGET, Scene, encode


def post_reference(client, image: bytes, mask: bytes):
    return client.post("/references", files={"image": ("i", image, "image/png"), "mask": ("m", mask, "image/png")})


def post_target(client, ref_id: str, target: bytes):
    return client.post("/segment", files={"target": ("t", target, "image/png")}, data={"reference_ids": ref_id})


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny compressed row of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + data


@pytest.mark.parametrize("payload", [b"definitely not an image", b"", b"\x89PNG\r\n\x1a\n garbage"])
def test_not_an_image_is_415(client, ref_id, payload):
    assert_error(post_target(client, ref_id, payload), 415, "invalid_image")
    assert_error(post_reference(client, payload, REFERENCE.mask_png), 415, "invalid_image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_415(client, ref_id, fmt):
    data = encode(TARGET.image, fmt)
    assert_error(post_target(client, ref_id, data[: len(data) // 2]), 415, "invalid_image")


def test_pixel_count_over_the_limit_is_413(client, ref_id):
    big = encode(np.zeros((2000, 2100, 3), dtype=np.uint8))  # 4.2 MP > INSID3_MAX_PIXELS=4 MP
    assert "4000000" in assert_error(post_target(client, ref_id, big), 413, "image_too_large")["detail"]


def test_decompression_bomb_is_413(client, ref_id):
    bomb = png_header_only(60_000, 60_000)
    assert len(bomb) < 2000
    assert_error(post_target(client, ref_id, bomb), 413, "image_too_large")
    assert_error(post_reference(client, REFERENCE.png, bomb), 413, "image_too_large")


def test_empty_mask_is_422(client):
    empty = encode(np.zeros(REFERENCE.mask.shape, dtype=np.uint8))
    assert_error(post_reference(client, REFERENCE.png, empty), 422, "empty_mask")


def test_mask_with_another_aspect_is_422(client):
    square = encode(np.full((100, 100), 255, dtype=np.uint8))
    assert_error(post_reference(client, REFERENCE.png, square), 422, "mask_shape_mismatch")


def test_mask_at_another_resolution_with_the_same_aspect_is_fine(client):
    half = Scene(REFERENCE.image, REFERENCE.mask[::2, ::2])
    response = post_reference(client, REFERENCE.png, half.mask_png)
    assert response.status_code in (200, 201), response.text


def test_unknown_reference_is_404(client):
    assert_error(segment(client, [TARGET], {"reference_ids": "0" * 32}), 404, "reference_not_found")
    assert_error(client.get("/references/nope"), 404, "reference_not_found")


def test_match_only_reference_cannot_segment(client):
    matched = client.post("/match", files={"target": ("t", TARGET.png, "image/png"),
                                           "reference_image": ("r", REFERENCE.png, "image/png")},
                          data={"points": "[[10, 10]]"}).json()
    assert_error(segment(client, [TARGET], {"reference_ids": matched["reference_id"]}), 422, "invalid_input")


@pytest.mark.parametrize(("data", "field"), [
    ({"format": "bmp"}, "format"),
    ({"tau": "2"}, "tau"),
    ({"merge_threshold": "-0.1"}, "merge_threshold"),
    ({"instances": "maybe"}, "instances"),
])
def test_invalid_parameters_are_422(fake, data, field):
    http, backend = fake
    body = assert_error(segment(http, [TARGET], {"reference_ids": "r", **data}), 422, "validation_error")
    assert field in body["detail"] and body["errors"]
    assert backend.calls == []


HUGE = "1" + "0" * 400  # an integer past float's range


@pytest.mark.parametrize("points", [f"[[{HUGE}, 1]]", f"[[1, -{HUGE}]]", f"[[{'9' * 5000}, 1]]", "[[NaN, 1]]",
                                    "[[Infinity, 1]]", "[[1e400, 1]]"])
def test_an_out_of_range_point_is_422(fake, points):
    http, backend = fake
    body = assert_error(match(http, TARGET, {"reference_id": "r", "points": points}), 422, "invalid_input")
    assert "finite numbers" in body["detail"]
    assert backend.calls == []


@pytest.mark.parametrize("field", ["tau", "merge_threshold", "ttl_s", "X-Request-Timeout"])
@pytest.mark.parametrize("value", [HUGE, f"-{HUGE}", "nan", "inf", "-inf", "1e999"])
def test_out_of_range_numbers_are_422(fake, field, value):
    http, backend = fake
    if field == "ttl_s":
        response = create_reference(http, REFERENCE, ttl_s=value)
    elif field == "X-Request-Timeout":
        response = segment(http, [TARGET], {"reference_ids": "r"}, headers={field: value})
    else:
        response = segment(http, [TARGET], {"reference_ids": "r", field: value})
    body = assert_error(response, 422, "validation_error")
    assert field in body["detail"]
    assert backend.calls == []


def test_a_repeated_request_timeout_header_is_422(fake):
    http, backend = fake
    twice = [("X-Request-Timeout", "5"), ("X-Request-Timeout", "30")]
    body = assert_error(segment(http, [TARGET], {"reference_ids": "r"}, headers=twice), 422, "validation_error")
    assert "X-Request-Timeout: given 2 times" in body["detail"]
    assert backend.calls == []


def test_missing_parts_are_422(fake):
    http, backend = fake
    assert_error(http.post("/segment", data={"reference_ids": "r"}), 422, "validation_error")
    assert_error(segment(http, [TARGET], {}), 422, "invalid_input")
    assert_error(http.post("/references", files={"image": ("i", REFERENCE.png, "image/png")}), 422,
                 "validation_error")
    unpaired = http.post("/segment", files=[("target", ("t", TARGET.png, "image/png")),
                                            ("reference_image", ("r", REFERENCE.png, "image/png"))])
    assert_error(unpaired, 422, "invalid_input")
    assert backend.calls == []


def test_too_many_targets_is_422(fake):
    http, backend = fake
    body = assert_error(segment(http, [TARGET] * 17, {"reference_ids": "r"}), 422, "invalid_input")
    assert "INSID3_MAX_TARGETS" in body["detail"]
    assert backend.calls == []


def test_not_multipart_is_422(fake):
    http, backend = fake
    assert_error(http.post("/segment", json={"target": "x"}), 422, "validation_error")
    assert backend.calls == []


def test_unknown_route_and_method_are_json(fake):
    http, _ = fake
    assert_error(http.get("/nope"), 404, "not_found")
    assert_error(http.put("/segment"), 405, "method_not_allowed")


def test_name_too_long_is_422(fake):
    http, backend = fake
    assert_error(create_reference(http, REFERENCE, name="x" * 300), 422, "validation_error")
    assert backend.calls == []


def test_backend_errors_map_to_their_statuses(fake):
    http, backend = fake
    assert_error(segment(http, [TARGET], {"reference_ids": "0" * 32}), 404, "reference_not_found")
    assert backend.called("get_reference") == 1 and backend.called("segment") == 0  # refused before any work
    backend.problem = "the fake model is away"
    body = assert_error(create_reference(http, REFERENCE), 503, "model_unavailable")
    assert body["detail"] == "the fake model is away"
    assert_error(http.get("/readyz"), 503, "model_unavailable")


def _concrete_errors() -> list[type[Insid3Error]]:
    found, todo = [], [Insid3Error]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__ in ("core.errors", "core.serving") and cls not in (Insid3Error, BackendError):
            found.append(cls)
    return found


@pytest.mark.parametrize("error", _concrete_errors(), ids=lambda cls: cls.__name__)
def test_every_engine_and_serving_error_has_a_status_other_than_500(error):
    assert status_of(error.__new__(error)) != 500  # status_of looks at the class only
