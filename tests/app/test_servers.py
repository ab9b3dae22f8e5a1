"""Apps configured differently, in-process: missing model, API keys + CORS (fake backend), a queue
that holds nothing, another image size; and invalid settings on the command line."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.dependencies import default_timeout
from app.settings import Settings
from core.startup import PROGRESS
from insid3.cli import build_parser
from insid3.cli import main as insid3
from tests.app.conftest import in_process, tiny_args
from tests.support.api import assert_error, create_reference, match, reference_id, segment
from tests.support.fake_backend import FakeBackend
from tests.support.images import REFERENCE, TARGET
from tests.support.net import eventually

KEYS = ("key-one", "key-two")
ORIGIN = "http://page.example"


@pytest.fixture(scope="module")
def missing_model(tiny_settings):
    """Model size small with an empty pretrain/ folder: no weights anywhere."""
    with in_process(tiny_settings(model_size="small", weights=None, image_size=224), ready=False) as http:
        yield http


def _settled_reason(http) -> str:
    """The /readyz 503 reason once the background model build has given up (no longer "loading")."""
    def settled() -> str | None:
        reason = assert_error(http.get("/readyz"), 503, "model_unavailable")["detail"]
        return None if reason.startswith("the model is loading") else reason

    return eventually(settled, 60, "the model build to give up")


def test_missing_model_keeps_running_and_says_why(missing_model):
    assert missing_model.get("/healthz").status_code == 200
    reason = _settled_reason(missing_model)
    assert "dinov3_vits16_pretrain_lvd1689m-08c60483.pth" in reason and "pretrain" in reason
    assert "--weights" in reason  # how to get them
    assert " https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ " in reason  # the link whole
    assert "/tmp" not in reason and "/home" not in reason  # while absolute paths are cut to their names
    for response in (
        segment(missing_model, [TARGET], {"reference_ids": "0" * 32}),
        create_reference(missing_model, REFERENCE),
        missing_model.get("/references"),
    ):
        assert assert_error(response, 503, "model_unavailable")["detail"] == reason
    assert missing_model.get("/").status_code == 200


@pytest.fixture(scope="module")
def guarded(tiny_settings):
    """API keys and one CORS origin, on a fake backend."""
    backend = FakeBackend()
    with in_process(tiny_settings(api_keys=list(KEYS), cors_origins=[ORIGIN]), backend) as http:
        yield http, backend


def test_api_keys_are_required_on_model_endpoints(guarded):
    http, backend = guarded
    assert_error(http.get("/references"), 401, "unauthorized")
    assert_error(http.get("/references", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    assert_error(segment(http, [TARGET], {"reference_ids": "x"}), 401, "unauthorized")
    assert backend.calls == []
    assert http.get("/references", headers={"X-API-Key": KEYS[1]}).status_code == 200
    assert backend.called("list_references") == 1
    for public in ("/healthz", "/readyz", "/", "/openapi.json"):
        assert http.get(public).status_code == 200, public
    assert_error(http.get("/metrics"), 401, "unauthorized")  # INSID3_METRICS_AUTH=admin by default


def test_cors_allows_only_the_configured_origin(guarded):
    http, _ = guarded
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key"}
    allowed = http.options("/segment", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    denied = http.options("/segment", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in denied.headers
    assert http.get("/healthz", headers={"Origin": ORIGIN}).headers["access-control-allow-origin"] == ORIGIN


def test_no_cors_headers_by_default(client):
    assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": ORIGIN}).headers


def test_full_queue_is_503_with_retry_after(tiny_settings):
    with in_process(tiny_settings(max_queue=0, retry_after_s=3)) as http:
        response = create_reference(http, REFERENCE)
    assert_error(response, 503, "queue_full")
    assert response.headers["retry-after"] == "3"


def test_reference_of_another_image_size_is_409(client, tiny_settings, reference_dir):
    ref_id = reference_id(client, REFERENCE)
    with in_process(tiny_settings(image_size=96, reference_dir=reference_dir)) as other:
        assert other.get(f"/references/{ref_id}").json()["image_size"] == 128
        body = assert_error(segment(other, [TARGET], {"reference_ids": ref_id}), 409, "incompatible_reference")
        assert "128" in body["detail"] and "96" in body["detail"]
        assert_error(match(other, TARGET, {"reference_id": ref_id, "points": "[[5, 5]]"}), 409,
                     "incompatible_reference")


def test_deadline_exceeded_is_504_and_the_app_goes_on(client):
    ref_id = reference_id(client, REFERENCE)
    late = segment(client, [TARGET], {"reference_ids": ref_id}, headers={"X-Request-Timeout": "0.000001"})
    assert_error(late, 504, "deadline_exceeded")
    assert segment(client, [TARGET], {"reference_ids": ref_id}).status_code == 200


def test_invalid_settings_exit_with_a_message(monkeypatch, capsys):
    import uvicorn

    def never(*args, **kwargs):
        raise AssertionError("invalid settings must stop before uvicorn starts")

    monkeypatch.setattr(uvicorn, "run", never)
    monkeypatch.setenv("INSID3_MAX_BATCH", "zero")
    assert insid3(["serve", "--port", "1"]) == 2
    assert "max_batch" in capsys.readouterr().err


def test_a_start_narrates_its_phases_then_reports_the_warm_ups_latency(start_server, tiny_checkpoint: Path,
                                                                      tmp_path: Path) -> None:
    server = start_server(tiny_args(tiny_checkpoint), env={"INSID3_BASIS_CACHE_DIR": str(tmp_path / "cold")},
                          ready=False)  # a cold cache: the encoder is exported, the basis computed
    starting: list[dict] = []

    def ready() -> dict | None:
        server.process.check_alive()
        response = httpx.get(f"{server.url}/readyz", timeout=30)
        if response.status_code == 503 and "startup" in response.json():
            starting.append(response.json())
        return response.json() if response.status_code == 200 else None

    answer = eventually(ready, what="the server to be ready")
    assert starting, "no /readyz answer showed the start's progress"
    first = starting[0]
    assert first["error"] == "model_unavailable" and f"now: {first['startup']['phase']}" in first["detail"]
    assert "one target took" in answer["advice"] and answer["request_timeout_s"] == 60.0
    log = server.log()
    for phase in ("weights", "clustering kernel", "encoder runtime", "positional basis", "warm-up"):
        assert re.search(rf"insid3\.start: {phase} done in \d+\.\d s", log), phase
    assert re.search(r"insid3\.start: ready in \d+\.\d s \(weights", log)


def test_a_deadline_raised_at_start_applies_unless_the_user_chose_one(monkeypatch) -> None:
    monkeypatch.setattr(PROGRESS, "deadline_s", 390.0)  # what a slow warm-up sets
    assert default_timeout(Settings()) == 390.0
    assert default_timeout(Settings(request_timeout_s=30.0)) == 30.0
    monkeypatch.setattr(PROGRESS, "deadline_s", None)
    assert default_timeout(Settings()) == 60.0


def _every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _every_parser(sub)


def test_options_are_never_abbreviated(capsys) -> None:
    parsers = list(_every_parser(build_parser()))
    assert len(parsers) > 10 and not any(parser.allow_abbrev for parser in parsers)
    with pytest.raises(SystemExit) as parsed:
        insid3(["serve", "--api-keys", "X"])  # not --api-keys-file X: keys come from INSID3_API_KEYS
    assert parsed.value.code == 2 and "unrecognized arguments: --api-keys X" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        insid3(["serve", "--request-timeout", "5"])
    assert "unrecognized arguments: --request-timeout 5" in capsys.readouterr().err
