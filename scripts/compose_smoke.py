"""The client side of scripts/compose-smoke.sh, run in a container on the stack's network.

Only the standard library and httpx, numpy and Pillow (all in the INSID3 image). The scenario:

1. wait for ``/readyz``; traffic through every model route (a reference created then found again,
   segments, matches, a 404 and a 504), twice, a Prometheus scrape apart (a rate needs two samples);
2. Prometheus: the API and every worker are ``up`` targets; every query of every dashboard in
   ``--dashboards`` returns data (the GPU-memory panel only has to evaluate on CPU workers);
3. Grafana, when given: healthy, both dashboards provisioned, its Prometheus datasource answers;
4. a burst of /segment and /match requests, ``--concurrency`` in flight at all times; ``<state>/progress``
   counts the answers, so that the calling script can ``docker kill`` a worker mid-burst (it then writes
   ``<state>/killed``); the burst goes on for ``--burst`` more requests. Every answer is counted by
   status; then Prometheus must show the API and one worker fewer ``up``.

Prints one ``check`` line per step and a JSON summary to ``<state>/result.json``; exits 1 unless
every check passed and every burst request got a 200.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

GRAFANA_MACROS = {"$__rate_interval": "5m"}
CUDA_ONLY_METRICS = ("insid3_gpu_memory_bytes",)
RESULTS: dict[str, Any] = {"checks": []}
CHECKS_FILE: list[Path] = []  # <state>/checks.txt once known: the calling script prints it in its summary


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = png((np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8))
TARGET = png((np.random.default_rng(1).random((128, 96, 3)) * 255).astype(np.uint8))
MASK = png(np.pad(np.full((40, 60), 255, np.uint8), ((40, 40), (50, 50))))
POINTS = json.dumps([[60, 40], [20, 100]])


def check(name: str, ok: bool, detail: str = "") -> bool:
    RESULTS["checks"].append({"name": name, "ok": ok, "detail": detail})
    line = f"check {'PASS' if ok else 'FAIL'}  {name}{': ' + detail if detail else ''}"
    print(line, flush=True)
    for path in CHECKS_FILE:
        with path.open("a") as checks:
            print(line, file=checks)
    return ok


def wait_until(condition: Callable[[], Any], timeout_s: float, interval_s: float = 1.0) -> Any:
    """``condition()`` once it is truthy, or its last value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        error = None
        try:
            result = condition()
        except httpx.HTTPError as exc:
            result, error = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            if error is not None:
                print(f"  (last error: {error!r})", flush=True)
            return result
        time.sleep(interval_s)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.client.get("/api/v1/query", params={"query": expr}).json()
        if body["status"] != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.client.get("/api/v1/targets").json()["data"]["activeTargets"]

    def wait_next_scrape(self, timeout_s: float = 60) -> bool:
        since = time.time()

        def scraped() -> bool:
            samples = self.query("min(timestamp(up))")
            return bool(samples) and float(samples[0]["value"][1]) > since

        return bool(wait_until(scraped, timeout_s))


def traffic(api: httpx.Client) -> Counter[str]:
    """Every model route once or more, a 404 and a 504; the statuses seen, by route."""
    seen: Counter[str] = Counter()
    reference_id = None
    for _ in range(2):  # created, then found again
        response = api.post("/references", files={"image": IMAGE, "mask": MASK})
        seen[f"POST /references {response.status_code}"] += 1
        if response.status_code in (200, 201):
            reference_id = response.json()["reference_id"]
    if reference_id is None:
        return seen
    for _ in range(3):
        response = api.post("/segment", files={"target": TARGET}, data={"reference_ids": reference_id})
        seen[f"POST /segment {response.status_code}"] += 1
        response = api.post("/match", files={"target": TARGET}, data={"reference_id": reference_id, "points": POINTS})
        seen[f"POST /match {response.status_code}"] += 1
    seen[f"GET /references/no-such-reference {api.get('/references/no-such-reference').status_code}"] += 1
    response = api.post("/segment", files={"target": TARGET}, data={"reference_ids": reference_id},
                        headers={"X-Request-Timeout": "0.000001"})
    seen[f"POST /segment (deadline 1 us) {response.status_code}"] += 1
    RESULTS["reference_id"] = reference_id
    return seen


def expected_traffic(seen: Counter[str]) -> bool:
    return (seen["POST /segment 200"] == 3 and seen["POST /match 200"] == 3
            and seen["POST /references 200"] + seen["POST /references 201"] == 2
            and seen["GET /references/no-such-reference 404"] == 1
            and seen["POST /segment (deadline 1 us) 504"] == 1)


def check_targets(prometheus: Prometheus, workers: int, when: str, exactly: bool = False) -> bool:
    """The API and ``workers`` workers (or more, unless ``exactly``) are ``up`` targets; waits for a scrape
    or a DNS refresh to get there."""
    def enough(targets: list[dict[str, Any]]) -> bool:
        jobs = Counter(t["labels"]["job"] for t in targets if t["health"] == "up")
        return jobs["insid3-api"] == 1 and (jobs["insid3-worker"] == workers if exactly
                                            else jobs["insid3-worker"] >= workers)

    def up() -> list[dict[str, Any]] | None:
        found = prometheus.targets()
        return found if enough(found) else None

    targets = wait_until(up, 90, 2) or prometheus.targets()
    detail = ", ".join(sorted(f"{t['labels']['job']} {t['labels']['instance']} {t['health']}" for t in targets))
    return check(f"Prometheus targets up {when} (api 1, workers {'' if exactly else '>= '}{workers})",
                 enough(targets), detail)


def dashboard_queries(directory: Path) -> list[tuple[str, str]]:
    queries = []
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for macro, value in GRAFANA_MACROS.items():
                    expr = expr.replace(macro, value)
                queries.append((f"{dashboard['title']} / {panel['title']}", expr))
    return queries


def check_dashboards(prometheus: Prometheus, directory: Path) -> bool:
    queries = dashboard_queries(directory)
    cuda_only = [(where, expr) for where, expr in queries if any(m in expr for m in CUDA_ONLY_METRICS)]
    rest = [query for query in queries if query not in cuda_only]
    missing: list[str] = []

    def all_have_data() -> bool:
        missing[:] = [f"{where}: {expr}" for where, expr in rest
                      if all(sample["value"][1] == "NaN" for sample in prometheus.query(expr))]
        return not missing

    ok = bool(wait_until(all_have_data, 120, 3))
    errors = []
    for where, expr in cuda_only:
        try:
            prometheus.query(expr)
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    check(f"every dashboard query returns data ({len(rest)} queries)", ok, "; ".join(missing))
    return check(f"CUDA-only queries evaluate ({len(cuda_only)}; empty on CPU workers)", not errors, "; ".join(errors))


def check_grafana(url: str, password: str) -> None:
    grafana = httpx.Client(base_url=url, timeout=30, auth=("admin", password))
    healthy = wait_until(lambda: grafana.get("/api/health").status_code == 200, 120, 2)
    check("Grafana healthy", bool(healthy))
    titles = sorted(item["title"] for item in grafana.get("/api/search", params={"type": "dash-db"}).json())
    check("Grafana dashboards provisioned", {"INSID3 / Service", "INSID3 / Workers and engine"} <= set(titles),
          ", ".join(titles))
    response = grafana.get("/api/datasources/proxy/uid/prometheus/api/v1/query", params={"query": "up"})
    check("Grafana queries Prometheus", response.status_code == 200 and bool(response.json()["data"]["result"]),
          f"HTTP {response.status_code}")


def burst(api: httpx.Client, state: Path, after_kill: int, concurrency: int, guard_s: float = 600) -> Counter[str]:
    """/segment and /match requests, ``concurrency`` in flight at all times, until ``after_kill`` more were
    sent once ``<state>/killed`` appeared (or ``guard_s`` passed); every answer counted by status."""
    reference_id = RESULTS["reference_id"]
    lock = threading.Lock()
    statuses: Counter[str] = Counter()
    counts = {"sent": 0, "sent_before_kill": 0, "answered": 0}
    started = time.monotonic()

    def take() -> int | None:
        """The next request's number, or None when the burst is over."""
        with lock:
            killed = (state / "killed").exists()
            if killed and counts["sent"] - counts["sent_before_kill"] >= after_kill:
                return None
            if time.monotonic() - started > guard_s:
                return None
            counts["sent"] += 1
            if not killed:
                counts["sent_before_kill"] = counts["sent"]
            return counts["sent"]

    def one(index: int) -> str:
        try:
            if index % 2:
                response = api.post("/match", files={"target": TARGET},
                                    data={"reference_id": reference_id, "points": POINTS})
            else:
                response = api.post("/segment", files={"target": TARGET}, data={"reference_ids": reference_id})
            return str(response.status_code)
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def loop() -> None:
        while (index := take()) is not None:
            status = one(index)
            with lock:
                statuses[status] += 1
                counts["answered"] += 1
                (state / "progress").write_text(str(counts["answered"]))

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    RESULTS["burst"] = {**counts, "statuses": dict(statuses), "seconds": round(time.monotonic() - started, 1)}
    return statuses


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", required=True)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--grafana", help="Grafana's URL; leave out to skip Grafana")
    parser.add_argument("--grafana-password", default="admin")
    parser.add_argument("--dashboards", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--burst", type=int, default=100, help="requests sent after the kill")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    CHECKS_FILE.append(args.state / "checks.txt")

    api = httpx.Client(base_url=args.api, timeout=180)
    prometheus = Prometheus(args.prometheus)
    ready = wait_until(lambda: api.get("/readyz").status_code == 200, 300, 2)
    check("API /readyz 200 (a worker is alive, Redis answers)", bool(ready))
    rounds = []
    for index in range(2):
        seen = traffic(api)
        rounds.append(seen)
        check(f"traffic round {index + 1}: reference, segment, match 200; 404; 504",
              expected_traffic(seen), ", ".join(f"{key} x{count}" for key, count in sorted(seen.items())))
        check(f"Prometheus scraped again after round {index + 1}", prometheus.wait_next_scrape())
    if "reference_id" not in RESULTS:
        return finish(args.state)
    check_targets(prometheus, args.workers, "before the kill")
    check_dashboards(prometheus, args.dashboards)
    if args.grafana:
        check_grafana(args.grafana, args.grafana_password)

    statuses = burst(api, args.state, args.burst, args.concurrency)
    result = RESULTS["burst"]
    killed = args.state / "killed"
    check("a worker was killed mid-burst", killed.exists() and 0 < result["sent_before_kill"] < result["sent"],
          f"{killed.read_text().strip() if killed.exists() else 'no kill'}; {result['sent_before_kill']} requests "
          f"sent before the kill, {result['sent'] - result['sent_before_kill']} after, {args.concurrency} in flight")
    check(f"burst: {result['sent']} sent, {result['answered']} answered, every one 200",
          statuses == Counter({"200": result["sent"]}),
          f"statuses {dict(sorted(statuses.items()))} in {result['seconds']} s")
    check_targets(prometheus, args.workers - 1, "after the kill", exactly=True)
    return finish(args.state)


def finish(state: Path) -> int:
    (state / "result.json").write_text(json.dumps(RESULTS, indent=2))
    return 0 if all(item["ok"] for item in RESULTS["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
