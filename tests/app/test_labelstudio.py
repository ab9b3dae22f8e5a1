"""The Label Studio ML backend (/labelstudio) at the protocol level, without Label Studio: the real
app on the tiny checkpoint in both serving modes, two tenants, and task images served by a small
local HTTP server standing in for Label Studio's file and webhook endpoints
(scripts/labelstudio-e2e.sh runs the real Label Studio)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from app.labelstudio.brush import rle_to_mask
from tests.app.conftest import in_process, tiny_args
from tests.support.api import assert_error, decode_rle
from tests.support.images import TWO_DISCS
from tests.support.label_studio import CONFIG, PROJECT, SCENES, TOKEN, Studio, brush, task
from tests.support.net import eventually
from tests.support.processes import Process

KEYS = {"alpha": "alpha-ls-key", "beta": "beta-ls-key"}
DATABASE = "/13"  # a database of the session's redis-server that no other test area uses


@pytest.fixture(scope="module")
def studio() -> Iterator[Studio]:
    studio = Studio()
    yield studio
    studio.live.stop()


@pytest.fixture(scope="module", params=["embedded", "redis"])
def service(request, tiny_settings, tiny_checkpoint, studio: Studio, tmp_path_factory) -> Iterator[TestClient]:
    """The app in either serving mode (Redis: through a real ``insid3 worker`` on its own database)."""
    settings = {"api_keys": [f"{tenant}:{key}" for tenant, key in KEYS.items()],
                "label_studio_url": studio.live.url, "label_studio_token": TOKEN}
    if request.param == "embedded":
        with in_process(tiny_settings(**settings)) as http:
            yield http
        return
    url = urlunsplit(urlsplit(request.getfixturevalue("redis_url"))._replace(path=DATABASE))
    redis.Redis.from_url(url).flushdb()
    worker = Process.insid3(["worker", "--redis-url", url, *tiny_args(tiny_checkpoint)],
                            tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        with in_process(tiny_settings(redis_url=url, **settings)) as http:
            yield http
    finally:
        worker.stop()


def auth(tenant: str = "alpha") -> tuple[str, str]:
    return ("label-studio", KEYS[tenant])


def annotate(http: TestClient, action: str, number: int, name: str, result: list[dict], tenant: str = "alpha") -> None:
    answer = http.post("/labelstudio/webhook", auth=auth(tenant), json={
        "action": action, "annotation": {"id": number, "task": number, "result": result},
        "task": task(number, name), "project": PROJECT})
    assert answer.status_code == 201, answer.text


def examples(http: TestClient, tenant: str = "alpha") -> list[dict]:
    items = http.get("/references", params={"limit": 1000}, headers={"X-API-Key": KEYS[tenant]}).json()["items"]
    return [item for item in items if (item["name"] or "").startswith("labelstudio:7:")]


def wait_examples(http: TestClient, count: int, kind: str = ":mask:") -> list[dict]:
    return eventually(lambda: (found := [e for e in examples(http) if kind in e["name"]]) and len(found) == count
                      and found, what=f"{count} examples")


def predict(http: TestClient, tasks: list[dict], context: dict | None = None, config: str = CONFIG,
            tenant: str = "alpha") -> httpx.Response:
    return http.post("/labelstudio/predict", auth=auth(tenant), json={
        "tasks": tasks, "project": "7.1700000000", "label_config": config,
        "params": {"login": None, "password": None, "context": context}})


def segment(http: TestClient, ids: list[str], name: str) -> np.ndarray:
    answer = http.post("/segment", headers={"X-API-Key": KEYS["alpha"]}, data={"reference_ids": ",".join(ids)},
                       files={"target": (name, SCENES[name].png, "image/png")})
    return decode_rle(answer.json()["results"][0]["rle"])


def test_health_needs_basic_auth_with_an_api_key(service: TestClient) -> None:
    assert service.get("/labelstudio/health", auth=auth()).json() == {"status": "UP", "model_class": "INSID3"}
    missing = assert_error(service.get("/labelstudio/health"), 401, "unauthorized")
    assert "basic auth" in missing["detail"]
    assert service.get("/labelstudio/health").headers["www-authenticate"].startswith("Basic")
    assert_error(service.get("/labelstudio/health", auth=("label-studio", "wrong")), 401)
    assert_error(service.get("/labelstudio/health", headers={"Authorization": "Basic not-base64!"}), 401)
    assert service.get("/labelstudio/health", headers={"X-API-Key": KEYS["alpha"]}).status_code == 200
    assert_error(service.get("/references", auth=auth()), 401)  # basic auth is Label Studio's, under /labelstudio


def test_setup_answers_a_version_and_gives_the_webhook_the_callers_credentials(service: TestClient,
                                                                             studio: Studio) -> None:
    answer = service.post("/labelstudio/setup", auth=auth("beta"),
                          json={"project": "7.1700000000", "schema": CONFIG, "hostname": "x", "access_token": "y"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "insid3-no-examples"
    assert studio.patches[-1]["headers"]["Authorization"] == httpx.BasicAuth(*auth("beta"))._auth_header


@pytest.mark.parametrize(("config", "says"), [
    ("<View><Text name='t' value='$t'/></View>", "no <Image"),
    ("<View><Image name='i' value='$i'/><Choices name='c' toName='i'/></View>", "no BrushLabels"),
    ("<View><Image", "not valid XML"),
    ("", "no labeling config"),
])
def test_an_unusable_label_config_is_a_clear_422(service: TestClient, config: str, says: str) -> None:
    body = assert_error(predict(service, [task(1, "t.png")], config=config), 422, "unsupported_label_config")
    assert says in body["detail"]
    assert_error(service.post("/labelstudio/setup", auth=auth(), json={"project": "7.1", "schema": config}), 422)


@pytest.mark.parametrize(("image", "code"), [
    ("http://elsewhere.example/a.png", "image_host_not_allowed"),
    (None, "image_unavailable"),
    ("/data/upload/7/missing.png", "image_unavailable"),
])
def test_an_unusable_task_image_is_a_clear_422(service: TestClient, image: str | None, code: str) -> None:
    body = assert_error(predict(service, [{"id": 1, "data": {"image": image}}]), 422, code)
    assert body["detail"]


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"tasks": []}', b'{"tasks": [1], "project": "x"}'])
def test_malformed_requests_are_clear_422s(service: TestClient, body: bytes) -> None:
    answer = service.post("/labelstudio/predict", auth=auth(), content=body,
                          headers={"content-type": "application/json"})
    assert_error(answer, 422)


def test_annotations_become_examples_and_predictions_equal_segment(service: TestClient) -> None:
    annotate(service, "ANNOTATION_CREATED", 101, "a.png", [brush(SCENES["a.png"].mask)])
    annotate(service, "ANNOTATION_CREATED", 102, "b.png", [brush(SCENES["b.png"].mask)])
    ids = sorted(example["reference_id"] for example in wait_examples(service, 2))
    assert examples(service, "beta") == []  # another tenant sees none of them

    answer = predict(service, [task(1, "t.png"), task(2, "t2.png"), task(3, "two.png")])
    assert answer.status_code == 200, answer.text
    version = service.post("/labelstudio/setup", auth=auth(), json={"project": "7.1", "schema": CONFIG}).json()
    for prediction, name in zip(answer.json()["results"], ["t.png", "t2.png", "two.png"], strict=True):
        [result] = prediction["result"]
        assert (result["type"], result["from_name"], result["to_name"]) == ("brushlabels", "brush", "img")
        assert result["value"]["brushlabels"] == ["disc"]
        mask = rle_to_mask(result["value"]["rle"], result["original_width"], result["original_height"])
        assert np.array_equal(mask, segment(service, ids, name))
        assert prediction["model_version"] == version["model_version"] != "insid3-no-examples"
        assert 0 < prediction["score"] <= 1

    other = predict(service, [task(1, "t.png")], tenant="beta").json()["results"][0]
    assert other["result"] == []  # beta's project 7 has no examples


def test_an_update_replaces_and_a_deletion_removes_the_example(service: TestClient) -> None:
    mask = SCENES["a.png"].mask
    annotate(service, "ANNOTATION_CREATED", 201, "a.png", [brush(mask)])
    before = eventually(lambda: {e["reference_id"] for e in examples(service) if ":201:" in e["name"]},
                        what="the created example")  # webhooks are applied after their answer
    half = mask & (np.arange(mask.shape[1])[None, :] < 80)
    annotate(service, "ANNOTATION_UPDATED", 201, "a.png", [brush(half)])
    after = eventually(lambda: (ids := {e["reference_id"] for e in examples(service) if ":201:" in e["name"]})
                       and not ids & before and ids, what="the updated example")  # the old one gone too
    assert len(after) == 1 and not after & before
    answer = service.post("/labelstudio/webhook", auth=auth(),
                          json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 201}], "project": PROJECT})
    assert answer.status_code == 201
    eventually(lambda: not [e for e in examples(service) if ":201:" in e["name"]], what="the example removed")


def test_keypoints_are_matched_onto_other_tasks(service: TestClient) -> None:
    point = {"from_name": "kp", "to_name": "img", "type": "keypointlabels", "original_width": 200,
             "original_height": 150, "value": {"x": 40.0, "y": 46.0, "width": 1, "keypointlabels": ["centre"]}}
    annotate(service, "ANNOTATION_CREATED", 301, "a.png", [point])
    wait_examples(service, 1, ":points:")
    [prediction] = predict(service, [task(1, "t.png")]).json()["results"]
    [matched] = [r for r in prediction["result"] if r["type"] == "keypointlabels"]
    assert matched["value"]["keypointlabels"] == ["centre"]
    assert 0 <= matched["value"]["x"] <= 100 and 0 <= matched["value"]["y"] <= 100
    assert (matched["original_width"], matched["original_height"]) == (180, 150)


def test_an_interactive_stroke_is_the_tasks_own_example(service: TestClient) -> None:
    stroke = TWO_DISCS.mask & (np.arange(TWO_DISCS.mask.shape[1])[None, :] < 120)  # the left disc only
    answer = predict(service, [task(3, "two.png")], context={"result": [brush(stroke)]})
    assert answer.status_code == 200, answer.text
    [result] = [r for r in answer.json()["results"][0]["result"] if r["type"] == "brushlabels"]
    mask = rle_to_mask(result["value"]["rle"], result["original_width"], result["original_height"])
    assert mask.any()


def test_an_interactive_box_is_the_tasks_own_example(service: TestClient) -> None:
    height, width = TWO_DISCS.mask.shape
    box = {"from_name": "box", "to_name": "img", "type": "rectanglelabels", "original_width": width,
           "original_height": height,  # around the left disc (60, 60, r 28), in % of the image
           "value": {"x": 32 * 100 / width, "y": 32 * 100 / height, "width": 56 * 100 / width,
                     "height": 56 * 100 / height, "rotation": 0, "rectanglelabels": ["disc"]}}
    answer = predict(service, [task(3, "two.png")], context={"result": [box]})
    assert answer.status_code == 200, answer.text
    [result] = [r for r in answer.json()["results"][0]["result"] if r["type"] == "brushlabels"]
    assert rle_to_mask(result["value"]["rle"], result["original_width"], result["original_height"]).any()


def test_one_bad_task_of_a_batch_is_its_own_entry(service: TestClient) -> None:
    answer = predict(service, [task(1, "t.png"), {"id": 9, "data": {"image": "http://elsewhere.example/x.png"}}])
    assert answer.status_code == 200, answer.text
    good, bad = answer.json()["results"]
    assert "result" in good
    assert "result" not in bad and bad["error"] == "image_host_not_allowed" and bad["task"] == 9


def test_other_events_are_acknowledged(service: TestClient) -> None:
    answer = service.post("/labelstudio/webhook", auth=auth(), json={"action": "PROJECT_UPDATED", "project": PROJECT})
    assert answer.status_code == 200 and answer.json()["status"] == "Unknown event"
    assert_error(service.post("/labelstudio/webhook", auth=auth(), json={"action": "ANNOTATION_CREATED"}), 422)
    assert_error(service.post("/labelstudio/train", auth=auth(), json={}), 422)


def test_training_makes_the_examples_again_from_the_annotations_sent(service: TestClient) -> None:
    annotate(service, "ANNOTATION_CREATED", 501, "a.png", [brush(SCENES["a.png"].mask)])
    [lost] = eventually(lambda: [e for e in examples(service) if ":501:" in e["name"]], what="the example")
    service.delete(f"/references/{lost['reference_id']}", headers={"X-API-Key": KEYS["alpha"]})
    annotated = [{**task(501, "a.png"), "annotations": [{"id": 501, "result": [brush(SCENES["a.png"].mask)]}]}]
    answer = service.post("/labelstudio/train", auth=auth(), json={
        "annotations": annotated, "project": "7.1700000000", "label_config": CONFIG})
    assert answer.status_code == 200, answer.text
    back = eventually(lambda: {e["reference_id"] for e in examples(service) if ":501:" in e["name"]},
                      what="the example made again")
    assert back == {lost["reference_id"]}
    eventually(lambda: {e["name"].split(":")[2] for e in examples(service)} == {"501"},
               what="the examples of annotations not sent deleted")


POLYGON_CONFIG = ('<View><Image name="img" value="$image"/><PolygonLabels name="poly" toName="img">'
                  '<Label value="blob"/></PolygonLabels></View>')


def test_polygons_are_examples_and_a_polygon_only_label_is_predicted_as_polygons(service: TestClient) -> None:
    outline = [[25.0, 26.7], [55.0, 26.7], [55.0, 66.7], [25.0, 66.7]]  # a box around a.png's disc, in %
    region = {"from_name": "poly", "to_name": "img", "type": "polygonlabels", "original_width": 200,
              "original_height": 150, "value": {"points": outline, "polygonlabels": ["blob"]}}
    answer = service.post("/labelstudio/webhook", auth=auth(), json={
        "action": "ANNOTATION_CREATED", "annotation": {"id": 401, "result": [region]},
        "task": task(401, "a.png"), "project": {"id": 7, "label_config": POLYGON_CONFIG}})
    assert answer.status_code == 201
    eventually(lambda: [e for e in examples(service) if e["name"] == "labelstudio:7:401:mask:blob"],
               what="the polygon example")
    [prediction] = predict(service, [task(1, "t.png")], config=POLYGON_CONFIG).json()["results"]
    assert prediction["result"], prediction
    for result in prediction["result"]:
        assert (result["type"], result["value"]["polygonlabels"]) == ("polygonlabels", ["blob"])
        assert len(result["value"]["points"]) >= 3
        assert all(0 <= coordinate <= 100 for point in result["value"]["points"] for coordinate in point)


@pytest.mark.parametrize("region", [
    {"type": "brushlabels", "value": {"format": "rle", "rle": [1, 2, 3], "brushlabels": ["disc"]}},
    {"type": "brushlabels", "original_width": 180, "original_height": 150,
     "value": {"format": "rle", "rle": [1, 2, 3], "brushlabels": ["disc"]}},
    {"type": "keypointlabels", "original_width": 180, "original_height": 150,
     "value": {"x": "left", "y": 3, "keypointlabels": ["centre"]}},
    {"type": "polygonlabels", "original_width": 180, "original_height": 150,
     "value": {"points": [[1, 2, 3]], "polygonlabels": ["disc"]}},
    {"type": "polygonlabels", "original_width": 100_000, "original_height": 100_000,  # 10^10 pixels: refused
     "value": {"points": [[1, 2], [3, 4], [5, 1]], "polygonlabels": ["disc"]}},
])
def test_an_unusable_region_in_the_context_is_a_clear_4xx(service: TestClient, region: dict) -> None:
    status = 413 if region.get("original_width") == 100_000 else 422
    body = assert_error(predict(service, [task(1, "t.png")], context={"result": [region]}), status)
    assert body["detail"]
