"""deploy/prometheus checked by Debian's promtool: config syntax, rule syntax, alert unit tests."""

from __future__ import annotations

import yaml

from tests.deploy.config import ALERTS, DEPLOY, alert_rules, run

ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"


def test_promtool_checks_the_config_and_its_rule_files():
    result = run("promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules():
    result = run("promtool", "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts_pass():
    result = run("promtool", "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_seen_firing_by_a_unit_test():
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing = {case["alertname"] for test in cases for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert firing == {rule["alert"] for rule in alert_rules()}


def test_every_alert_has_a_severity_and_explains_itself():
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule.get("for"), f"{rule['alert']} fires on a single evaluation"
