"""Execution events carry their trace through JetStream in the ``traceparent`` header."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from comfyfleet.common.config import NatsConfig
from comfyfleet.common.events import EventBus, connect_bus
from comfyfleet.common.telemetry import context_of, current_traceparent, tracer
from comfyfleet.executions.v1 import executions_pb2
from tests.support.infra import NatsInfo, NatsNames
from tests.support.telemetry import InProcessTelemetry, installed_telemetry


@pytest.fixture
async def bus(nats_server: NatsInfo, nats_names: NatsNames) -> AsyncIterator[EventBus]:
    cfg = NatsConfig(nats_server.url, nats_names.stream, nats_names.subject_prefix)
    async with connect_bus(cfg, name="telemetry-test") as connected:
        try:
            yield connected
        finally:
            # Each stream reserves its byte limit of the test server's JetStream storage.
            await connected.js.delete_stream(nats_names.stream)


def event(number: int) -> executions_pb2.WorkflowExecutionEvent:
    return executions_pb2.WorkflowExecutionEvent(
        event_id=f"evt_{number}",
        execution_id="exe_traced",
        tenant="ten_t",
        event_type="execution.queued",
        sequence=number,
    )


async def published(bus: EventBus) -> list[Msg]:
    sub = await bus.js.subscribe(bus.subject("ten_t", "exe_traced"), ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=5) for _ in range(2)]
    finally:
        await sub.unsubscribe()


async def test_a_stored_trace_travels_in_the_headers(bus: EventBus) -> None:
    otel: InProcessTelemetry = installed_telemetry()
    with tracer.start_as_current_span("CreateExecution") as created:
        stored = current_traceparent()
    # Later, in the relay: no span is current, the stored traceparent names the trace.
    await bus.publish(event(1), traceparent=stored)
    await bus.publish(event(2))
    first, second = await published(bus)

    traceparent = (first.headers or {})["traceparent"]
    parent = context_of(traceparent)
    assert parent is not None
    trace_id = created.get_span_context().trace_id
    [publish] = [s for s in otel.spans.in_trace(trace_id) if s.kind is SpanKind.PRODUCER]
    # The consumer continues from the publish span, itself a child of the creating call.
    assert traceparent.split("-")[1:3] == [f"{trace_id:032x}", f"{publish.context.span_id:016x}"]
    assert publish.parent is not None
    assert publish.parent.span_id == created.get_span_context().span_id
    assert publish.attributes is not None
    assert publish.attributes["messaging.system"] == "nats"
    assert publish.attributes["messaging.message.id"] == "evt_1"
    assert (first.headers or {})["Nats-Msg-Id"] == "evt_1"
    # Without a trace, the headers are as before.
    assert "traceparent" not in (second.headers or {})
