"""A server stream under the telemetry interceptor ends its span without the context errors
OpenTelemetry logs when a context is detached in another context than it was attached in.

A client that leaves a stream while the server is sending (not waiting inside the servicer)
leaves the servicer's generator at a ``yield``; the event loop closes it later, in a task of
its own. Here the servicer streams WatchExecution events as fast as they can be sent, so a
cancel nearly always lands in a send."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.trace import SpanKind

from comfyfleet.common.grpcserver import channel, registration, serve
from comfyfleet.common.telemetry import tracer
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from tests.support import eventually
from tests.support.telemetry import InProcessTelemetry, installed_telemetry

WATCH = "comfyfleet.executions.v1.ExecutionService/WatchExecution"


class EndlessEvents(executions_pb2_grpc.ExecutionServiceServicer):
    async def WatchExecution(
        self, request: executions_pb2.WatchExecutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executions_pb2.WorkflowExecutionEvent]:
        sequence = 0
        while True:
            sequence += 1
            yield executions_pb2.WorkflowExecutionEvent(
                execution_id=request.id, event_type="execution.progress", sequence=sequence
            )


@pytest.fixture
def otel() -> InProcessTelemetry:
    return installed_telemetry()


async def test_a_watch_left_mid_stream_ends_its_span_without_context_errors(
    otel: InProcessTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    reg = registration(EndlessEvents(), executions_pb2_grpc, "ExecutionService")
    async with serve("127.0.0.1:0", [reg], grace=0.5) as server:
        ch = channel(f"127.0.0.1:{server.port}")
        stub = executions_pb2_grpc.ExecutionServiceStub(ch)
        try:
            with tracer.start_as_current_span("watcher") as watcher:
                for _ in range(5):
                    call = stub.WatchExecution(executions_pb2.WatchExecutionRequest(id="exe_1"))
                    for _ in range(20):
                        assert (await call.read()).execution_id == "exe_1"
                    call.cancel()
                    await asyncio.sleep(0.05)
            trace_id = watcher.get_span_context().trace_id

            async def ended() -> None:
                gc.collect()  # the abandoned generators, closed by the loop's finalizer
                await asyncio.sleep(0.05)
                servers = [
                    s
                    for s in otel.spans.in_trace(trace_id)
                    if s.name == WATCH and s.kind is SpanKind.SERVER
                ]
                assert len(servers) == 5

            await eventually(ended, timeout=10)
        finally:
            await ch.close()
    troubles = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert troubles == []
