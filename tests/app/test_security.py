"""The service as an attacker sees it: keys, leaks of credentials and paths, the reference
directory, unauthenticated bodies, what is public, CORS (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.auth import KeyRing
from app.main import create_app
from app.settings import Settings
from tests.support.api import assert_error, create_reference, segment
from tests.support.fake_backend import FakeBackend
from tests.support.images import REFERENCE, TARGET
from tests.support.live_server import LiveServer
from tests.support.net import eventually, free_port
from tests.support.paths import REPO_ROOT

KEY = "the-only-key"
ORIGIN = "http://page.example"


def _live(**fields: object) -> LiveServer:
    settings = Settings(model_size="tiny", image_size=64, device="cpu", **fields)
    return LiveServer(create_app(settings, FakeBackend())).start()


@pytest.fixture(scope="module")
def keyed() -> Iterator[str]:
    live = _live(api_keys=[KEY], cors_origins=[ORIGIN])
    yield live.url
    live.stop()


def test_keys_are_kept_as_digests_only() -> None:
    ring = KeyRing([KEY, "acme:acme-key"], None)
    assert KEY not in repr(vars(ring)) and "acme-key" not in repr(vars(ring))
    assert ring.principal(b"acme-key").tenant == "acme" and ring.principal(KEY.encode()).tenant == "default"
    assert ring.principal(b"acme") is None and ring.principal(None) is None


@pytest.mark.parametrize("value", [b"\xfc", "\u00fc".encode(), b"\xff\xfe" + KEY.encode(), b"", KEY.encode() + b"\xa0"])
def test_a_non_ascii_or_odd_key_is_401(keyed: str, value: bytes) -> None:
    assert_error(httpx.get(f"{keyed}/references", headers={"X-API-Key": value}), 401, "unauthorized")


@pytest.mark.parametrize(("value", "message"), [
    (" , ", "API keys must not be empty"), (",", "API keys must not be empty"),
    ("a,,b", "API keys must not be empty"), (" ", "API keys must not be empty"),
    ("\t \n", "API keys must not be empty"),
    ("good-key,a: KEY", "INSID3_API_KEYS entry 2: the key of tenant 'a' has a space, control or non-ASCII"),
    ("acme:k\u00e9y", "INSID3_API_KEYS entry 1: the key of tenant 'acme' has a space, control or non-ASCII"),
])
def test_a_blank_or_unsendable_key_setting_refuses_to_start(value: str, message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "insid3", "serve", "--port", str(free_port())],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "INSID3_API_KEYS": value})
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "KEY" not in result.stderr.replace("INSID3_API_KEYS", "")  # the key itself is never printed


def test_an_unreadable_key_file_refuses_to_start(tmp_path: Path) -> None:
    files = {"bad.txt": "tenant-without-key\n", "empty.txt": "", "comments.txt": "# no key yet\n",
             "partial.txt": "t1 Sup3r#sec", "trailing.txt": "t1 key-1 # ops team\n", "space.txt": "t1 k\u00a0ey\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for path, message in ((tmp_path / "missing.txt", "cannot read the API key file"),
                          (tmp_path / "bad.txt", "bad.txt line 1"),
                          (tmp_path / "empty.txt", "empty.txt: empty, or its last line has no newline"),
                          (tmp_path / "comments.txt", "comments.txt: no key"),
                          (tmp_path / "partial.txt", "partial.txt: empty, or its last line has no newline"),
                          (tmp_path / "trailing.txt", "comments go on their own line"),
                          (tmp_path / "space.txt", "space.txt line 1: the key of tenant 't1' has a space")):
        result = subprocess.run([sys.executable, "-m", "insid3", "serve", "--api-keys-file", str(path)],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_redis_credentials_never_reach_clients_or_logs(start_server) -> None:
    url = f"redis://user:hunter2-user@127.0.0.1:{free_port()}/0?password=hunter2-query"
    server = start_server(["--redis-url", url], ready=False)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        bodies = [http.get("/readyz"), http.get("/references"), create_reference(http, REFERENCE),
                  segment(http, [TARGET], {"reference_ids": "0" * 32}), http.get(f"/references/{'0' * 32}")]
        time.sleep(1.5)  # the reply reader has tried (and logged) a reconnection
    for response in bodies:
        assert_error(response, 503, "model_unavailable")
        assert "hunter2" not in response.text
    assert "127.0.0.1" in bodies[0].json()["detail"]
    assert "hunter2" not in server.log()


def test_readiness_names_no_internal_path(start_server, tmp_path: Path) -> None:
    pretrain = tmp_path / "secret-dir" / "pretrain"
    server = start_server(["--model-size", "small", "--image-size", "224", "--device", "cpu"],
                          {"INSID3_PRETRAIN_DIR": str(pretrain)}, ready=False)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        deadline = time.monotonic() + 60
        while (reason := http.get("/readyz").json()["detail"]).startswith("the model is loading"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        model_call = http.get("/references").json()["detail"]
    for text in (reason, model_call):
        assert "dinov3_vits16_pretrain_lvd1689m-08c60483.pth" in text and "--weights" in text
        assert str(tmp_path) not in text and "secret-dir" not in text
    assert str(pretrain) in server.log()  # the operator still learns where it looked


def _plant(directory: Path, name: str, reference_id: str) -> None:
    record = {"reference_id": reference_id, "name": None, "width": 1, "height": 1, "mask_area": 1,
              "model": "m", "image_size": 64, "created_at": "2020-01-01T00:00:00+00:00",
              "expires_at": "2020-01-02T00:00:00+00:00"}
    (directory / f"{name}.json").write_text(json.dumps(record))


def _embedded(checkpoint: Path, workdir: Path) -> LiveServer:
    settings = Settings(model_size="tiny", weights=str(checkpoint), image_size=64, device="cpu",
                        basis_cache_dir=workdir / "basis", reference_dir=workdir / "refs")
    return LiveServer(create_app(settings)).start(ready_path="/readyz")


def test_reference_dir_is_never_escaped_and_corrupt_entries_are_repaired(tiny_checkpoint: Path,
                                                                         tmp_path: Path) -> None:
    live = _embedded(tiny_checkpoint, tmp_path)
    try:
        ref_id = create_reference(httpx.Client(base_url=live.url, timeout=60), REFERENCE).json()["reference_id"]
    finally:
        live.stop()
    refs = tmp_path / "refs"
    (refs / f"{ref_id}.npz").write_bytes(b"PK\x03\x04 not a zip any more")
    victims = [tmp_path / "victim.json", tmp_path / "victim.npz", tmp_path / "abs.json", tmp_path / "abs.npz"]
    for victim in victims:
        victim.write_text("keep me")
    _plant(refs, "traversal", "../victim")
    _plant(refs, "absolute", str(tmp_path / "abs"))
    _plant(refs, "a" * 32, "../victim")
    (refs / f"{'b' * 32}.json").write_text("{not json")  # a corrupt record
    (refs / f"{'c' * 32}.json").write_text("{not json")
    live = _embedded(tiny_checkpoint, tmp_path)
    try:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            assert_error(http.get(f"/references/{'b' * 32}"), 410, "reference_corrupt")
            assert not (refs / f"{'b' * 32}.json").exists()
            assert_error(http.get(f"/references/{'b' * 32}"), 404, "reference_not_found")
            assert http.get("/references").status_code == 200  # unauthenticated (keys off)
            assert not (refs / f"{'c' * 32}.json").exists()  # the listing dropped the corrupt record
            assert not (refs / f"{'a' * 32}.json").exists()  # the listing dropped the record naming another id
            assert http.get(f"/references/{'a' * 32}").status_code == 404
            assert_error(segment(http, [TARGET], {"reference_ids": ref_id}), 410, "reference_corrupt")
            assert not (refs / f"{ref_id}.npz").exists()  # the corrupt entry was dropped
            assert_error(segment(http, [TARGET], {"reference_ids": ref_id}), 404, "reference_not_found")
            again = create_reference(http, REFERENCE)
            assert again.status_code == 201 and again.json()["reference_id"] == ref_id
            assert segment(http, [TARGET], {"reference_ids": ref_id}).status_code == 200
    finally:
        live.stop()
    assert all(victim.read_text() == "keep me" for victim in victims)


def _status_line_within(port: int, request: bytes, timeout_s: float) -> bytes:
    """Send ``request`` (headers and the start of a body) and read the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_401_comes_before_the_body_is_read(keyed: str) -> None:
    port = httpx.URL(keyed).port
    head = (b"POST /references HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 10000000\r\n\r\n--b\r\n")
    started = time.monotonic()
    status = _status_line_within(port, head, timeout_s=10)
    assert status.startswith(b"HTTP/1.1 401") and time.monotonic() - started < 5
    wrong = head.replace(b"Host: x\r\n", b"Host: x\r\nX-API-Key: nope\r\n")
    assert _status_line_within(port, wrong, timeout_s=10).startswith(b"HTTP/1.1 401")


def test_metrics_and_docs_protection_follow_the_settings(keyed: str) -> None:
    assert_error(httpx.get(f"{keyed}/metrics"), 401, "unauthorized")  # default: an admin key
    assert_error(httpx.get(f"{keyed}/metrics", headers={"X-API-Key": KEY}), 401, "unauthorized")
    for public in ("/healthz", "/readyz", "/", "/docs", "/openapi.json"):
        assert httpx.get(f"{keyed}{public}").status_code == 200, public
    assert_error(httpx.get(f"{keyed}/nowhere"), 401, "unauthorized")
    guarded = _live(api_keys=[KEY], metrics_auth="public", docs="key")
    closed = _live(api_keys=[KEY], docs="off")
    try:
        assert httpx.get(f"{guarded.url}/metrics").status_code == 200
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert_error(httpx.get(f"{guarded.url}{path}"), 401, "unauthorized")
            assert httpx.get(f"{guarded.url}{path}", headers={"X-API-Key": KEY}).status_code == 200
            assert_error(httpx.get(f"{closed.url}{path}", headers={"X-API-Key": KEY}), 404)
    finally:
        guarded.stop()
        closed.stop()


def test_cors_rejections_are_json_and_headers_are_exposed(keyed: str) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key"}
    denied = httpx.options(f"{keyed}/segment", headers={"Origin": "http://evil.example", **preflight})
    body = assert_error(denied, 400, "cors_preflight_rejected")
    assert "origin" in body["detail"] and "access-control-allow-origin" not in denied.headers
    allowed = httpx.options(f"{keyed}/segment", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    answered = httpx.get(f"{keyed}/references", headers={"Origin": ORIGIN})
    exposed = {h.strip().lower() for h in answered.headers["access-control-expose-headers"].split(",")}
    assert {"x-insid3-area", "x-insid3-bbox", "x-insid3-score", "retry-after"} <= exposed


def test_sighup_reloads_the_key_file(start_server, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("acme acme-key-1\n")
    server = start_server(["--model-size", "small", "--device", "cpu"], {"INSID3_API_KEYS_FILE": str(keys)},
                          ready=False)
    stamp = keys.stat()
    keys.write_text("acme acme-key-2\n")  # same size, and the same modification time as before:
    os.utime(keys, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # only the signal can tell
    time.sleep(1.2)

    def status(key: str) -> int:
        return httpx.get(f"{server.url}/references", headers={"X-API-Key": key}).status_code

    assert status("acme-key-1") == 503 and status("acme-key-2") == 401  # 503: no weights, but a valid key
    assert server.process is not None
    server.process.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while status("acme-key-2") != 503:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    assert status("acme-key-1") == 401


def test_a_hash_inside_a_key_keeps_it_whole_and_a_bad_reload_keeps_the_keys(start_server, tmp_path: Path) -> None:
    """The real server, the real file: an emptied, half-written or broken file is never applied."""
    keys = tmp_path / "keys.txt"
    keys.write_text("# tenants\n  # (indented comment)\nt1 Sup3r#secret-1\n")
    server = start_server(["--model-size", "small", "--device", "cpu"], {"INSID3_API_KEYS_FILE": str(keys)},
                          ready=False)
    assert server.process is not None

    def status(key: str) -> int:
        return httpx.get(f"{server.url}/references", headers={"X-API-Key": key}).status_code

    def refused(text: str, signal_it: bool = False) -> None:
        kept = server.log().count("kept the previous API keys")
        keys.write_text(text)
        if signal_it:
            server.process.send(signal.SIGHUP)
        eventually(lambda: status("Sup3r#secret-1") and server.log().count("kept the previous API keys") > kept,
                   timeout_s=10, what=f"the reload of {text!r} to be refused")

    assert status("Sup3r#secret-1") == 503 and status("Sup3r") == 401  # 503: no weights, but a valid key
    refused("")  # emptied on disk (as `>` or an editor does before writing)
    refused("", signal_it=True)
    refused("t1 Sup3r#secret-1\nt2 half-writ")  # half-written: no final newline
    refused("t1 Sup3r#secret-1\nt2\n")
    assert status("Sup3r#secret-1") == 503 and status("half-writ") == 401
    keys.write_text("t2 whole-key-2\n")  # complete: applied
    eventually(lambda: status("whole-key-2") == 503, timeout_s=10, what="the new key file to apply")
    assert status("Sup3r#secret-1") == 401


def test_a_key_is_only_read_from_its_header(keyed: str) -> None:
    for response in (
        httpx.get(f"{keyed}/references", params={"api_key": KEY, "X-API-Key": KEY}),
        httpx.get(f"{keyed}/references", headers={"Authorization": f"Bearer {KEY}"}),
        httpx.post(f"{keyed}/references", data={"X-API-Key": KEY, "api_key": KEY}),
        httpx.get(f"{keyed}/references", cookies={"X-API-Key": KEY}),
    ):
        assert_error(response, 401, "unauthorized")
    assert httpx.get(f"{keyed}/nowhere", headers={"x-api-key": KEY}).status_code == 404  # past the check
