"""Where traces and metrics go, from the standard OTEL_* variables and COMFYFLEET_METRICS_ADDR."""

from __future__ import annotations

import socket

import pytest

from comfyfleet.common.config import ConfigError
from comfyfleet.common.telemetry import TelemetryConfig, build_telemetry

OTEL_VARS = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "COMFYFLEET_METRICS_ADDR",
    "OTEL_RESOURCE_ATTRIBUTES",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


def test_nothing_set_exports_nothing() -> None:
    assert TelemetryConfig.from_env() == TelemetryConfig(
        traces_exporter="none", metrics_exporter="none", otlp_protocol="grpc", metrics_addr=""
    )


def test_an_otlp_endpoint_sends_traces_and_metrics_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    cfg = TelemetryConfig.from_env()
    assert (cfg.traces_exporter, cfg.metrics_exporter) == ("otlp", "otlp")


def test_a_signal_endpoint_alone_turns_otlp_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    cfg = TelemetryConfig.from_env()
    assert cfg.traces_exporter == "otlp"
    assert cfg.otlp_protocol == "http/protobuf"


def test_exporters_named_explicitly_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "None")
    cfg = TelemetryConfig.from_env()
    assert (cfg.traces_exporter, cfg.metrics_exporter) == ("console", "none")


def test_metrics_addr_and_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYFLEET_METRICS_ADDR", "0.0.0.0:9102")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "scheduler-eu")
    cfg = TelemetryConfig.from_env()
    assert (cfg.metrics_addr, cfg.service_name) == ("0.0.0.0:9102", "scheduler-eu")


@pytest.mark.parametrize(
    "name,value,mentioned",
    [
        ("OTEL_TRACES_EXPORTER", "jaeger", "OTEL_TRACES_EXPORTER"),
        ("OTEL_METRICS_EXPORTER", "prometheus", "OTEL_METRICS_EXPORTER"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ("COMFYFLEET_METRICS_ADDR", "9101", "COMFYFLEET_METRICS_ADDR"),
        ("COMFYFLEET_METRICS_ADDR", "localhost:http", "COMFYFLEET_METRICS_ADDR"),
    ],
)
def test_bad_settings_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, mentioned: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=mentioned):
        TelemetryConfig.from_env()


def test_nothing_to_export_builds_no_providers() -> None:
    built = build_telemetry("gateway", TelemetryConfig())
    assert built.tracer_provider is None
    assert built.meter_provider is None
    assert built.metrics_port == 0


def test_console_exporters_build_providers_named_after_the_service() -> None:
    cfg = TelemetryConfig(traces_exporter="console", metrics_exporter="console")
    built = build_telemetry("models", cfg)
    try:
        resource = built.tracer_provider.resource.attributes
        assert resource["service.name"] == "models"
        assert resource["service.namespace"] == "comfyfleet"
        assert built.meter_provider is not None
    finally:
        built.shutdown()


def test_otel_service_name_overrides_the_code_s_name() -> None:
    built = build_telemetry("models", TelemetryConfig(traces_exporter="console", service_name="m2"))
    try:
        assert built.tracer_provider.resource.attributes["service.name"] == "m2"
    finally:
        built.shutdown()


def test_the_instance_is_the_host_unless_the_environment_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = TelemetryConfig(traces_exporter="console")
    built = build_telemetry("executor", cfg)
    try:
        instance = built.tracer_provider.resource.attributes["service.instance.id"]
        assert instance == socket.gethostname()
    finally:
        built.shutdown()
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=executor-7,zone=b")
    built = build_telemetry("executor", cfg)
    try:
        attributes = built.tracer_provider.resource.attributes
        assert (attributes["service.instance.id"], attributes["zone"]) == ("executor-7", "b")
    finally:
        built.shutdown()
