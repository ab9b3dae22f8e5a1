"""POST /segment: every format, k-shot, inline references, several targets, instances (in-process, real engine)."""

from __future__ import annotations

import base64

import numpy as np
from pycocotools import mask as coco_mask

from tests.support.api import decode_rle, reference_id, segment
from tests.support.images import BLUE, REFERENCE, REFERENCE_2, TARGET, TARGET_2, TWO_DISCS, Scene, decode, iou


def test_rle_finds_the_disc(client, ref_id):
    response = segment(client, [TARGET], {"reference_ids": ref_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "rle" and body["reference_ids"] == [ref_id]
    [result] = body["results"]
    mask = decode_rle(result["rle"])
    assert mask.shape == TARGET.mask.shape
    assert iou(mask, TARGET.mask) > 0.5
    assert result["area"] == int(mask.sum())
    x, y, w, h = result["bbox"]
    rows, cols = np.nonzero(mask)
    assert (x, y, x + w - 1, y + h - 1) == (cols.min(), rows.min(), cols.max(), rows.max())
    assert 0 < result["score"] <= 1
    assert {"pipeline_ms", "clustering_ms"} <= set(result["timings"])
    assert body["timings"]["total_ms"] > 0


def test_png_is_the_mask(client, ref_id):
    rle = segment(client, [TARGET], {"reference_ids": ref_id}).json()["results"][0]["rle"]
    response = segment(client, [TARGET], {"reference_ids": ref_id, "format": "png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    png = decode(response.content)
    assert png.shape == TARGET.mask.shape
    assert np.array_equal(png > 0, decode_rle(rle))
    assert int(response.headers["x-insid3-area"]) == int((png > 0).sum())


def test_polygons_cover_the_mask(client, ref_id):
    rle_mask = decode_rle(segment(client, [TARGET], {"reference_ids": ref_id}).json()["results"][0]["rle"])
    [result] = segment(client, [TARGET], {"reference_ids": ref_id, "format": "polygons"}).json()["results"]
    assert result["polygons"] and all(len(p) >= 8 and len(p) % 2 == 0 for p in result["polygons"])
    height, width = TARGET.mask.shape
    drawn = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(result["polygons"], height, width))).astype(bool)
    assert iou(drawn, rle_mask) > 0.9


def test_overlay_tints_the_found_region(client, ref_id):
    rle_mask = decode_rle(segment(client, [TARGET], {"reference_ids": ref_id}).json()["results"][0]["rle"])
    response = segment(client, [TARGET], {"reference_ids": ref_id, "format": "overlay"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    overlay = decode(response.content, "RGB").astype(int)
    assert overlay.shape == TARGET.image.shape
    outside = ~rle_mask
    assert np.array_equal(overlay[outside], TARGET.image[outside].astype(int))
    assert not np.array_equal(overlay[rle_mask], TARGET.image[rle_mask].astype(int))


def test_several_targets_share_a_request(client, ref_id):
    response = segment(client, [TARGET, TARGET_2], {"reference_ids": ref_id})
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1] and [r["filename"] for r in results] == ["t0.png", "t1.png"]
    for result, scene in zip(results, (TARGET, TARGET_2), strict=True):
        assert iou(decode_rle(result["rle"]), scene.mask) > 0.5


def test_png_with_several_targets_is_base64_json(client, ref_id):
    response = segment(client, [TARGET, TARGET_2], {"reference_ids": ref_id, "format": "png"})
    assert response.headers["content-type"] == "application/json"
    for result, scene in zip(response.json()["results"], (TARGET, TARGET_2), strict=True):
        png = decode(base64.b64decode(result["png"]))
        assert png.shape == scene.mask.shape and result["area"] == int((png > 0).sum())


def test_k_shot_with_two_references(client, ref_id):
    second = reference_id(client, REFERENCE_2)
    response = segment(client, [TARGET], {"reference_ids": [ref_id, second]})
    assert response.status_code == 200, response.text
    assert response.json()["reference_ids"] == [ref_id, second]
    assert iou(decode_rle(response.json()["results"][0]["rle"]), TARGET.mask) > 0.5
    comma = segment(client, [TARGET], {"reference_ids": f"{ref_id},{second}"}).json()
    assert comma["results"][0]["rle"] == response.json()["results"][0]["rle"]


def test_inline_references_are_stored_by_content_hash(client, ref_id):
    files = [
        ("target", ("t.png", TARGET.png, "image/png")),
        ("reference_image", ("r.png", REFERENCE.png, "image/png")),
        ("reference_mask", ("m.png", REFERENCE.mask_png, "image/png")),
    ]
    inline = client.post("/segment", files=files)
    assert inline.status_code == 200, inline.text
    assert inline.json()["reference_ids"] == [ref_id]
    stored = segment(client, [TARGET], {"reference_ids": ref_id}).json()
    assert inline.json()["results"][0]["rle"] == stored["results"][0]["rle"]


def test_instances_split_connected_components(client):
    two_ref = reference_id(client, TWO_DISCS)
    response = segment(client, [TWO_DISCS], {"reference_ids": two_ref, "instances": "true"})
    result = response.json()["results"][0]
    instances = result["instances"]
    assert len(instances) >= 2
    assert [i["area"] for i in instances] == sorted((i["area"] for i in instances), reverse=True)
    assert sum(i["area"] for i in instances) == result["area"]
    union = np.zeros(TWO_DISCS.mask.shape, dtype=bool)
    for instance in instances:
        part = decode_rle(instance["rle"])
        assert int(part.sum()) == instance["area"] and not (union & part).any()
        x, y, w, h = instance["bbox"]
        assert part[y:y + h, x:x + w].sum() == instance["area"]
        union |= part
    assert np.array_equal(union, decode_rle(result["rle"]))
    centres = [tuple(np.argwhere(decode_rle(i["rle"])).mean(axis=0)) for i in instances[:2]]
    for cy, cx, _ in [(60, 60, 28), (90, 170, 30)]:
        assert min(abs(cy - y) + abs(cx - x) for y, x in centres) < 20


def test_tau_and_merge_threshold_change_the_result(client, ref_id):
    default = segment(client, [TARGET], {"reference_ids": ref_id}).json()["results"][0]
    strict = segment(client, [TARGET], {"reference_ids": ref_id, "tau": "1.0", "merge_threshold": "1.0"})
    assert strict.status_code == 200
    assert strict.json()["results"][0]["rle"] != default["rle"]


def test_a_disc_of_another_colour_is_not_what_the_reference_shows(client, ref_id):
    blue = Scene(TARGET.image.copy(), TARGET.mask)
    blue.image[TARGET.mask] = BLUE
    found = decode_rle(segment(client, [TARGET], {"reference_ids": ref_id}).json()["results"][0]["rle"])
    other = decode_rle(segment(client, [blue], {"reference_ids": ref_id}).json()["results"][0]["rle"])
    assert iou(other, TARGET.mask) < iou(found, TARGET.mask)
