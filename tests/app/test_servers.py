"""Servers configured differently: missing model, API keys + CORS + full queue, another image size."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.app.conftest import tiny_args
from tests.app.helpers import assert_error, create_reference, reference_id, segment
from tests.app.scenes import REFERENCE, TARGET
from tests.conftest import REPO_ROOT

KEYS = ("key-one", "key-two")
ORIGIN = "http://page.example"


@pytest.fixture(scope="module")
def missing_model(start_server):
    """Model size small with an empty pretrain/ folder: no weights anywhere."""
    server = start_server(["--model-size", "small", "--image-size", "224", "--device", "cpu"], ready=False)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def _settled_reason(http: httpx.Client, timeout_s: float = 60.0) -> str:
    """The /readyz 503 reason once the background model build has given up (no longer "loading")."""
    deadline = time.monotonic() + timeout_s
    while True:
        reason = assert_error(http.get("/readyz"), 503, "model_unavailable")["detail"]
        if not reason.startswith("the model is loading") or time.monotonic() > deadline:
            return reason
        time.sleep(0.05)


def test_missing_model_keeps_running_and_says_why(missing_model):
    assert missing_model.get("/healthz").status_code == 200
    reason = _settled_reason(missing_model)
    assert "dinov3_vits16_pretrain_lvd1689m-08c60483.pth" in reason and "pretrain" in reason
    assert "--weights" in reason  # how to get them
    for response in (
        segment(missing_model, [TARGET], {"reference_ids": "0" * 32}),
        create_reference(missing_model, REFERENCE),
        missing_model.get("/references"),
    ):
        assert assert_error(response, 503, "model_unavailable")["detail"] == reason
    assert missing_model.get("/").status_code == 200


@pytest.fixture(scope="module")
def guarded(start_server, tiny_checkpoint):
    """API keys, one CORS origin, and a queue that holds nothing."""
    server = start_server(tiny_args(tiny_checkpoint), {
        "INSID3_API_KEYS": ",".join(KEYS), "INSID3_CORS_ORIGINS": ORIGIN, "INSID3_MAX_QUEUE": "0",
        "INSID3_RETRY_AFTER_S": "3",
    })
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def test_api_keys_are_required_on_model_endpoints(guarded):
    assert_error(guarded.get("/references"), 401, "unauthorized")
    assert_error(guarded.get("/references", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    assert_error(segment(guarded, [TARGET], {"reference_ids": "x"}), 401, "unauthorized")
    assert guarded.get("/references", headers={"X-API-Key": KEYS[1]}).status_code == 200
    for public in ("/healthz", "/readyz", "/", "/openapi.json"):
        assert guarded.get(public).status_code == 200, public
    assert_error(guarded.get("/metrics"), 401, "unauthorized")  # INSID3_METRICS_AUTH=admin by default


def test_full_queue_is_503_with_retry_after(guarded):
    guarded.headers["X-API-Key"] = KEYS[0]
    response = create_reference(guarded, REFERENCE)
    assert_error(response, 503, "queue_full")
    assert response.headers["retry-after"] == "3"


def test_cors_allows_only_the_configured_origin(guarded):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key"}
    allowed = guarded.options("/segment", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    denied = guarded.options("/segment", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in denied.headers
    assert guarded.get("/healthz", headers={"Origin": ORIGIN}).headers["access-control-allow-origin"] == ORIGIN


def test_no_cors_headers_by_default(client):
    assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": ORIGIN}).headers


def test_reference_of_another_image_size_is_409(client, start_server, tiny_checkpoint, reference_dir):
    ref_id = reference_id(client, REFERENCE)
    other = start_server(tiny_args(tiny_checkpoint, image_size=96), {"INSID3_REFERENCE_DIR": str(reference_dir)})
    with httpx.Client(base_url=other.url, timeout=60) as http:
        assert http.get(f"/references/{ref_id}").json()["image_size"] == 128
        body = assert_error(segment(http, [TARGET], {"reference_ids": ref_id}), 409, "incompatible_reference")
        assert "128" in body["detail"] and "96" in body["detail"]
        match = http.post("/match", files={"target": ("t", TARGET.png, "image/png")},
                          data={"reference_id": ref_id, "points": "[[5, 5]]"})
        assert_error(match, 409, "incompatible_reference")


def test_deadline_exceeded_is_504_and_the_server_goes_on(client):
    ref_id = reference_id(client, REFERENCE)
    late = segment(client, [TARGET], {"reference_ids": ref_id}, headers={"X-Request-Timeout": "0.000001"})
    assert_error(late, 504, "deadline_exceeded")
    assert segment(client, [TARGET], {"reference_ids": ref_id}).status_code == 200


def test_invalid_settings_exit_with_a_message():
    result = subprocess.run(
        [sys.executable, "-m", "insid3", "serve", "--port", "1"], cwd=REPO_ROOT, capture_output=True, text=True,
        env={"INSID3_MAX_BATCH": "zero", "PATH": ""}, timeout=120,
    )
    assert result.returncode == 2 and "max_batch" in result.stderr
