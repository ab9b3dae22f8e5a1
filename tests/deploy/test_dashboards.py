"""The Grafana dashboards, statically: structure, datasource, queries, and the metric contract."""

from __future__ import annotations

import re

import yaml

from tests.deploy.config import DASHBOARDS, DEPLOY, alert_queries, dashboard_queries, dashboards, panels
from tests.deploy.promql import expand_grafana, metric_names
from tests.support.paths import REPO_ROOT

EXPOSITION_SUFFIXES = ("_bucket", "_sum", "_count")


def contract_metrics() -> set[str]:
    """The metric names docs/architecture.md promises (its "Metrics" section)."""
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(insid3_[a-z0-9_]+)", section))


def family(name: str) -> str:
    return re.sub(rf"({'|'.join(EXPOSITION_SUFFIXES)})$", "", name)


def test_dashboards_exist_with_unique_uids_and_titles():
    assert len(DASHBOARDS) >= 2
    assert len({d["uid"] for d in dashboards().values()}) == len({d["title"] for d in dashboards().values()}) \
        == len(DASHBOARDS)


def test_panels_query_the_provisioned_datasource():
    datasources = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    [datasource] = yaml.safe_load(datasources.read_text())["datasources"]
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            assert panel["targets"], f"{name} / {panel['title']} has no query"
            assert panel["description"], f"{name} / {panel['title']} does not say how to read it"
            for target in [panel, *panel["targets"]]:
                assert target["datasource"] == {"type": datasource["type"], "uid": datasource["uid"]}
            assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])


def test_panels_fit_the_grid_without_overlapping():
    for name, dashboard in dashboards().items():
        cells = set()
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{name} / {panel['title']}"
            area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                    for y in range(grid["y"], grid["y"] + grid["h"])}
            assert not area & cells, f"{name} / {panel['title']} overlaps another panel"
            cells |= area


def test_queries_use_only_grafana_macros_prometheus_knows():
    for where, expr in dashboard_queries():
        assert metric_names(expand_grafana(expr)), where


def test_every_contract_metric_is_on_a_dashboard():
    shown = {family(name) for _, expr in dashboard_queries() for name in metric_names(expand_grafana(expr))}
    contract = {family(name) for name in contract_metrics()}
    assert len(contract) >= 15, "the metric contract was not found in docs/architecture.md"
    assert contract <= shown, contract - shown


def test_dashboards_and_alerts_use_only_contract_metrics():
    contract = {family(name) for name in contract_metrics()} | {"up"}
    for where, expr in [*dashboard_queries(), *alert_queries()]:
        assert {family(name) for name in metric_names(expand_grafana(expr))} <= contract, where
