"""/healthz, /readyz, /metrics and /docs (in-process, real engine)."""

from __future__ import annotations

from tests.support.api import reference_id, segment
from tests.support.images import REFERENCE, TARGET
from tests.support.metrics import parse


def scrape(client) -> dict[str, float]:
    """Every sample of /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (e.g. over tenants)."""
    return sum(v for key, v in samples.items()
               if key.split("{")[0] == name and all(f'{k}="{v_}"' in key for k, v_ in labels.items()))


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    readiness = client.get("/readyz").json()
    encoder = readiness.pop("encoder")
    assert readiness == {"ready": True, "reason": None, "mode": "embedded", "models": None,
                         "advice": None, "request_timeout_s": 60.0}  # no warm-up in-process
    assert encoder["runtime"] in ("torch", "onnxruntime", "openvino") and encoder["precision"] == "fp32"
    if encoder["chosen_by"] == "measurement":  # auto: every candidate's figures, the one in use exact
        (chosen,) = [m for m in encoder["measurements"]
                     if (m["runtime"], m["precision"]) == (encoder["runtime"], encoder["precision"])]
        assert chosen["exact"] and chosen["identical"] == chosen["scenes"] > 0


def test_metrics_move_after_traffic(client):
    ref_id = reference_id(client, REFERENCE)
    before = scrape(client)
    for _ in range(2):
        assert segment(client, [TARGET], {"reference_ids": ref_id}).status_code == 200
    assert client.get("/references/unknown").status_code == 404
    after = scrape(client)

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return value(after, name, **labels) - value(before, name, **labels) >= by

    assert grew("insid3_http_requests_total", 2, route="/segment", method="POST", status="200")
    assert grew("insid3_http_requests_total", 1, route="/references/{reference_id}", method="GET", status="404")
    assert grew("insid3_http_request_duration_seconds_count", 2, route="/segment", method="POST")
    assert grew("insid3_encoder_seconds_count", 2)
    assert grew("insid3_clustering_seconds_count", 2)
    assert grew("insid3_batch_size_count", 2)
    assert grew("insid3_reference_cache_hits_total", 2)
    assert value(after, "insid3_reference_cache_bytes") > 0
    assert "insid3_queue_depth" in after
    assert value(after, "insid3_encoder_runtime_info") == 1
    assert value(after, "insid3_http_requests_in_flight") >= 1  # the scrape itself


def test_unmatched_routes_share_one_label(client):
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    samples = scrape(client)
    assert value(samples, "insid3_http_requests_total", route="<unmatched>", method="GET", status="404") >= 2
    assert not any("/no/such" in key for key in samples)


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json").json()
    assert {"/references", "/references/{reference_id}", "/segment", "/match", "/healthz", "/readyz",
            "/metrics"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
