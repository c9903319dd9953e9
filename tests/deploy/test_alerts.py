"""Alert rules: every metric the platform names is watched, with a severity for each rule."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.support import DEPLOY

METRICS = (
    "api_request_duration_seconds",
    "api_requests_total",
    "api_errors_total",
    "rate_limit_violations_total",
    "workflow_execution_duration_seconds",
    "workflow_queue_time_seconds",
    "gpu_utilization_percent",
    "memory_usage_bytes",
    "container_restarts_total",
    "queue_depth",
    "cache_hit_rate",
    "model_load_time_seconds",
)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_rule_has_a_severity_and_text() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))


def test_every_platform_metric_is_watched() -> None:
    exprs = " ".join(rule["expr"] for rule in rules())
    used = set(re.findall(r"[a-z_]+", exprs))
    missing = [m for m in METRICS if m not in used and f"{m}_bucket" not in used]
    assert not missing


def test_signals_with_a_critical_threshold_also_warn_earlier() -> None:
    names = {rule["alert"] for rule in rules()}
    for name in names:
        if name.endswith("Critical"):
            assert name.removesuffix("Critical") + "Warning" in names, name


def test_every_rule_is_in_the_operators_table() -> None:
    documented = (DEPLOY.parent / "docs" / "deploy.md").read_text()
    for rule in rules():
        name = rule["alert"]
        family = re.sub(r"(Warning|Critical)$", "", name) + "*"
        assert f"`{name}`" in documented or f"`{family}`" in documented, name
