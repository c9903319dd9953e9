"""An executor attempt's spans (one per node, under the attempt, under the Execute call) and
its duration and model-load metrics."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from comfyfleet.common.errors import Cancelled, FailedPrecondition
from comfyfleet.common.telemetry import tracer
from services.executor.telemetry import AttemptTelemetry
from tests.support.telemetry import InProcessTelemetry, installed_telemetry


@pytest.fixture
def otel() -> InProcessTelemetry:
    return installed_telemetry()


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def run_attempt(error: Exception | None = None) -> tuple[int, dict[str, ReadableSpan]]:
    """A three-node attempt inside a stand-in for the Execute span; node 3 is still running
    when the attempt ends."""
    with tracer.start_as_current_span("Execute") as call:
        attempt = AttemptTelemetry("exe_1", 2)
    attempt.node("1", "EmptyImage", "cached")
    attempt.node("2", "ImageInvert", "running")
    attempt.node("2", "ImageInvert", "progress")
    attempt.node("2", "ImageInvert", "done")
    attempt.node("3", "SaveImage", "running")
    attempt.finished(error)  # type: ignore[arg-type]
    trace_id = call.get_span_context().trace_id
    return trace_id, by_name(installed_telemetry().spans.in_trace(trace_id))


def test_nodes_are_children_of_the_attempt_under_the_call(otel: InProcessTelemetry) -> None:
    _, spans = run_attempt()
    call, attempt = spans["Execute"], spans["executor attempt"]
    assert attempt.parent is not None and attempt.parent.span_id == call.context.span_id
    for name in ("node EmptyImage", "node ImageInvert", "node SaveImage"):
        node = spans[name]
        assert node.parent is not None and node.parent.span_id == attempt.context.span_id
        assert node.attributes is not None
        assert node.attributes["comfyfleet.execution_id"] == "exe_1"
        assert node.attributes["comfyfleet.attempt"] == 2
    assert spans["node EmptyImage"].attributes["comfyfleet.node_cached"] is True  # type: ignore[index]
    assert spans["node ImageInvert"].attributes["comfyfleet.node_id"] == "2"  # type: ignore[index]
    assert spans["executor attempt"].status.status_code is StatusCode.UNSET


def test_a_failed_attempt_fails_its_span_and_the_node_that_was_running(
    otel: InProcessTelemetry,
) -> None:
    _, spans = run_attempt(FailedPrecondition("node 3 (SaveImage) raised OSError: disk full"))
    for name in ("executor attempt", "node SaveImage"):
        assert spans[name].status.status_code is StatusCode.ERROR
        assert "disk full" in (spans[name].status.description or "")
    assert spans["node ImageInvert"].status.status_code is StatusCode.UNSET


def test_events_after_the_end_open_no_span(otel: InProcessTelemetry) -> None:
    with tracer.start_as_current_span("Execute") as call:
        attempt = AttemptTelemetry("exe_2", 1)
    attempt.finished(Cancelled("the execution was cancelled"))
    attempt.node("9", "KSampler", "running")  # an engine that ignored the cancel
    names = {s.name for s in otel.spans.in_trace(call.get_span_context().trace_id)}
    assert names == {"Execute", "executor attempt"}


def test_durations_are_counted_by_outcome(otel: InProcessTelemetry) -> None:
    name = "workflow_execution_duration_seconds_count"
    before = {o: otel.value(name, outcome=o) for o in ("succeeded", "failed", "cancelled")}
    run_attempt()
    run_attempt(FailedPrecondition("bad"))
    run_attempt(Cancelled("stop"))
    run_attempt(Cancelled("stop"))
    after = {o: otel.value(name, outcome=o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {
        "succeeded": 1,
        "failed": 1,
        "cancelled": 2,
    }


def test_model_load_time_only_for_attempts_with_models(otel: InProcessTelemetry) -> None:
    def buckets() -> tuple[float, float]:
        under_1s = otel.value("model_load_time_seconds_bucket", le="1.0")
        return under_1s, otel.value("model_load_time_seconds_bucket", le="2.5")

    before = buckets()
    attempt = AttemptTelemetry("exe_3", 1)
    attempt.models_ready(0.0, 0)
    attempt.models_ready(1.5, 2)
    attempt.finished(None)
    after = buckets()
    assert (after[0] - before[0], after[1] - before[1]) == (0, 1)
