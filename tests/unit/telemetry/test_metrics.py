"""The platform's metric names as Prometheus sees them, and the gauges live objects feed."""

from __future__ import annotations

import time

import pytest

from comfyfleet.common import metrics
from tests.support.telemetry import InProcessTelemetry, installed_telemetry

METHOD = "comfyfleet.executions.v1.ExecutionService/GetExecution"


@pytest.fixture
def otel() -> InProcessTelemetry:
    return installed_telemetry()


def test_api_calls_count_and_only_platform_failures_are_errors(otel: InProcessTelemetry) -> None:
    def counts(code: str) -> tuple[float, float, float]:
        return (
            otel.value("api_requests_total", method=METHOD, code=code),
            otel.value("api_errors_total", method=METHOD, code=code),
            otel.value("api_request_duration_seconds_count", method=METHOD, code=code),
        )

    codes = ("OK", "NOT_FOUND", "RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE")
    before = {code: counts(code) for code in codes}
    for code in codes:
        metrics.api_call(METHOD, code, 0.02)
    changed = {
        code: tuple(a - b for a, b in zip(counts(code), before[code], strict=True))
        for code in codes
    }
    assert changed == {
        "OK": (1, 0, 1),
        "NOT_FOUND": (1, 0, 1),
        "RESOURCE_EXHAUSTED": (1, 0, 1),
        "INTERNAL": (1, 1, 1),
        "UNAVAILABLE": (1, 1, 1),
    }


def test_rate_limit_violations_by_tenant(otel: InProcessTelemetry) -> None:
    before = otel.value("rate_limit_violations_total", tenant="ten_limited")
    metrics.rate_limited("ten_limited")
    metrics.rate_limited("ten_limited")
    assert otel.value("rate_limit_violations_total", tenant="ten_limited") == before + 2


def test_queue_depth_is_reported_while_its_source_is_entered(otel: InProcessTelemetry) -> None:
    gauge = metrics.QueueGauge({(5, "ten_q1", "native"): 3, (0, "ten_q2", "sd15"): 1})
    with metrics.queue_depth_source(gauge):
        assert otel.value("queue_depth", tenant="ten_q1", priority="5", environment="native") == 3
        gauge.depths = {(5, "ten_q1", "native"): 0, (0, "ten_q2", "sd15"): 4}
        assert otel.value("queue_depth", tenant="ten_q1") == 0
        assert otel.value("queue_depth", tenant="ten_q2", priority="0", environment="sd15") == 4
    assert "ten_q2" not in otel.exposition()


async def test_executor_gauges_follow_their_executor(otel: InProcessTelemetry) -> None:
    counts = [0, 0]
    source = metrics.executor_source("cuda:7", lambda: 42.0, lambda: (counts[0], counts[1]))
    async with source:
        assert otel.value("gpu_utilization_percent", device="cuda:7") == 42.0
        assert "cache_hit_rate{" not in otel.exposition()  # nothing asked for yet
        counts[:] = [3, 1]
        assert otel.value("cache_hit_rate", cache="models") == 0.75
    assert 'device="cuda:7"' not in otel.exposition()


def test_no_gpu_reading_reports_no_gpu(otel: InProcessTelemetry) -> None:
    with metrics.executor_source("cpu", lambda: None, lambda: (0, 0)):
        assert 'device="cpu"' not in otel.exposition()


def test_webhook_attempts_by_outcome(otel: InProcessTelemetry) -> None:
    before = otel.value("webhook_deliveries_total", outcome="gone")
    metrics.webhook_attempt("gone", 0.01)
    assert otel.value("webhook_deliveries_total", outcome="gone") == before + 1
    assert otel.value("webhook_delivery_duration_seconds_count", outcome="gone") >= 1


def test_memory_usage_is_the_process_resident_set(otel: InProcessTelemetry) -> None:
    assert otel.value("memory_usage_bytes") > 10 * 1024 * 1024


def test_the_process_start_time_is_reported(otel: InProcessTelemetry) -> None:
    started = otel.value("process_start_time_seconds")
    assert time.time() - 24 * 3600 < started <= time.time()
