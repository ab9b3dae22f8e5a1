"""The compose stack for real, minus Docker: redis-server with deploy/redis/redis.conf, the API and two
workers with the compose commands, and Debian's prometheus with deploy/prometheus (targets moved to
localhost). After traffic through every route, every dashboard and alert query must work on it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.config import alert_queries, alert_rules, dashboard_queries, healthcheck, service
from tests.deploy.promql import as_bool, expand_grafana, metric_names
from tests.deploy.stack import Stack
from tests.support.images import small_scene
from tests.support.net import eventually, free_port

IMAGE_SIZE = 64
WORKERS = 2
# Exported by every worker but only set on CUDA: on this CPU-only stack they evaluate, empty.
CUDA_ONLY = {"insid3_gpu_memory_bytes"}
PROMETHEUS_METRICS = {"up"}


IMAGE, MASK = small_scene(0).png, small_scene(0).mask_png
TARGET = small_scene(1).png


def drive_traffic(api: httpx.Client) -> None:
    """Every model route (the same reference twice: the second time it is found), a 404 and a 504."""
    for expected in ({200, 201}, {200}):
        response = api.post("/references", files={"image": IMAGE, "mask": MASK})
        assert response.status_code in expected, response.text
    reference_id = response.json()["reference_id"]
    for _ in range(3):
        response = api.post("/segment", files={"target": TARGET}, data={"reference_ids": reference_id})
        assert response.status_code == 200, response.text
        response = api.post("/match", files={"target": TARGET},
                            data={"reference_id": reference_id, "points": json.dumps([[40, 30], [10, 60]])})
        assert response.status_code == 200, response.text
    assert api.get("/references/no-such-reference").status_code == 404
    response = api.post("/segment", files={"target": TARGET}, data={"reference_ids": reference_id},
                        headers={"X-Request-Timeout": "0.000001"})
    assert response.status_code == 504, response.text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stack"), tiny_checkpoint, IMAGE_SIZE)
    try:
        stack.start_redis()
        stack.start_api()
        for index in range(WORKERS):
            stack.start_worker(index)
        stack.start_prometheus()
        stack.wait_ready()
        stack.wait_scraped(1 + WORKERS)
        with httpx.Client(base_url=stack.api_url, timeout=60) as api:
            # Twice, a scrape apart: a series born with its first count shows no increase to rate().
            drive_traffic(api)
            stack.wait_next_scrape()
            drive_traffic(api)
        yield stack
    finally:
        stack.close()


def exported_metrics(port: int) -> set[str]:
    """Every metric family and sample name a process exports (declared families without samples too)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    families = list(text_string_to_metric_families(text))
    return {family.name for family in families} | {sample.name for family in families for sample in family.samples}


def assert_all_return_data(stack: Stack, queries: list[tuple[str, str]]) -> None:
    """Every query returns a sample that is not NaN (NaN: a quantile or ratio of nothing), once
    Prometheus has scraped the traffic; a query Prometheus rejects fails at once."""
    missing: list[str] = []

    def all_have_data() -> bool:
        missing[:] = [f"{where}: {expr}" for where, expr in queries
                      if all(sample["value"][1] == "NaN" for sample in stack.query(expr))]
        return not missing

    try:
        eventually(all_have_data, 60, "every query to return data", interval_s=0.2)
    except TimeoutError:
        pytest.fail("queries without data:\n" + "\n".join(missing))


def test_prometheus_scrapes_every_target(stack):
    targets = stack.prometheus_api("targets")["activeTargets"]
    assert sorted(target["labels"]["job"] for target in targets) == ["insid3-api"] + ["insid3-worker"] * WORKERS
    assert [target["lastError"] for target in targets if target["health"] != "up"] == []


def test_every_dashboard_query_returns_data(stack):
    queries = [(where, expand_grafana(expr)) for where, expr in dashboard_queries()]
    cuda_only = [(where, expr) for where, expr in queries if metric_names(expr) <= CUDA_ONLY]
    assert cuda_only, "the GPU memory panel is missing"
    for _, expr in cuda_only:
        stack.query(expr)  # valid PromQL, empty without CUDA
    assert_all_return_data(stack, [query for query in queries if query not in cuda_only])


def test_every_alert_query_returns_data(stack):
    """In bool form: what the alert compares exists, so the alert can fire."""
    assert_all_return_data(stack, [(alert, as_bool(expr)) for alert, expr in alert_queries()])


def test_prometheus_evaluates_every_alert_rule_without_error(stack):
    def evaluated():
        rules = [rule for group in stack.prometheus_api("rules")["groups"] for rule in group["rules"]]
        return all(rule["lastEvaluation"] > "2000" for rule in rules) and rules

    rules = eventually(evaluated, what="every rule to be evaluated", interval_s=0.2)
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    assert [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []


def test_panels_and_alerts_use_only_exported_metrics(stack):
    exported = set().union(*(exported_metrics(port) for port in [stack.api_port, *stack.worker_ports]))
    assert exported >= CUDA_ONLY
    for where, expr in [*dashboard_queries(), *alert_queries()]:
        unknown = metric_names(expand_grafana(expr)) - exported - PROMETHEUS_METRICS
        assert not unknown, f"{where} uses metrics no process exports: {unknown}"


def test_container_healthchecks_pass_on_the_live_processes(stack):
    assert healthcheck(port=stack.api_port) == 0  # the image's HEALTHCHECK, as the API's port
    worker_url = service("worker")["healthcheck"]["test"][2]
    for port in stack.worker_ports:
        assert healthcheck(worker_url.replace(":9100", f":{port}"), port=free_port()) == 0
