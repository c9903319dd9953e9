"""Every gRPC hop continues the caller's trace: servers built with serve(), clients with
channel(); the public API's calls are counted and timed; /metrics serves Prometheus text."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from comfyfleet.common.errors import NotFound
from comfyfleet.common.grpcserver import channel, registration, serve
from comfyfleet.common.telemetry import TelemetryConfig, build_telemetry, tracer
from comfyfleet.executor.v1 import executor_pb2, executor_pb2_grpc
from tests.support import eventually
from tests.support.telemetry import InProcessTelemetry, installed_telemetry

CANCEL = "comfyfleet.executor.v1.ExecutorService/Cancel"
EXECUTE = "comfyfleet.executor.v1.ExecutorService/Execute"


class Executor(executor_pb2_grpc.ExecutorServiceServicer):
    """Answers from the request: "missing" is NOT_FOUND, "boom" a bug (INTERNAL), "slow"
    a stream that waits after each update."""

    def __init__(self) -> None:
        self.seen_trace_ids: list[int] = []

    async def Cancel(
        self, request: executor_pb2.CancelRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.CancelResponse:
        self.seen_trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        if request.execution_id == "missing":
            raise NotFound("no such attempt")
        if request.execution_id == "boom":
            raise RuntimeError("a bug")
        return executor_pb2.CancelResponse(found=True)

    async def Execute(
        self, request: executor_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_pb2.ExecuteUpdate]:
        for _ in range(3):
            yield executor_pb2.ExecuteUpdate()
            if request.execution_id == "slow":
                await asyncio.sleep(10)


@pytest.fixture
def otel() -> InProcessTelemetry:
    return installed_telemetry()


@asynccontextmanager
async def executor_stub(
    *, api_metrics: bool = False
) -> AsyncIterator[tuple[Executor, executor_pb2_grpc.ExecutorServiceStub, grpc.aio.Channel]]:
    servicer = Executor()
    reg = registration(servicer, executor_pb2_grpc, "ExecutorService")
    async with serve("127.0.0.1:0", [reg], grace=0.1, api_metrics=api_metrics) as server:
        ch = channel(f"127.0.0.1:{server.port}")
        try:
            yield servicer, executor_pb2_grpc.ExecutorServiceStub(ch), ch
        finally:
            await ch.close()


def one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind is kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def finished(otel: InProcessTelemetry, trace_id: int, count: int) -> list[ReadableSpan]:
    """The trace's spans once ``count`` of them ended (a client span ends just after its call)."""

    async def ended() -> list[ReadableSpan]:
        spans = otel.spans.in_trace(trace_id)
        assert len(spans) == count, [s.name for s in spans]
        return spans

    return await eventually(ended, timeout=5)


async def test_a_call_continues_the_caller_s_trace(otel: InProcessTelemetry) -> None:
    async with executor_stub() as (servicer, stub, _):
        with tracer.start_as_current_span("caller") as caller:
            await stub.Cancel(executor_pb2.CancelRequest(execution_id="exe_1", attempt=1))
        trace_id = caller.get_span_context().trace_id
        spans = await finished(otel, trace_id, 3)
    client, server = one(spans, CANCEL, SpanKind.CLIENT), one(spans, CANCEL, SpanKind.SERVER)
    assert parent_id(client) == caller.get_span_context().span_id
    assert parent_id(server) == client.context.span_id
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == "comfyfleet.executor.v1.ExecutorService"
    assert server.attributes["rpc.method"] == "Cancel"
    assert server.attributes["rpc.grpc.status_code"] == 0
    # The servicer runs inside the server span: calls it makes continue the trace.
    assert servicer.seen_trace_ids == [trace_id]


@pytest.mark.parametrize("execution_id,code", [("missing", 5), ("boom", 13)])
async def test_a_failed_call_fails_both_spans_with_its_code(
    otel: InProcessTelemetry, execution_id: str, code: int
) -> None:
    async with executor_stub() as (_, stub, _ch):
        with (
            tracer.start_as_current_span("caller") as caller,
            pytest.raises(grpc.aio.AioRpcError),
        ):
            await stub.Cancel(executor_pb2.CancelRequest(execution_id=execution_id))
        spans = await finished(otel, caller.get_span_context().trace_id, 3)
    for kind in (SpanKind.CLIENT, SpanKind.SERVER):
        span = one(spans, CANCEL, kind)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == code


async def test_a_stream_is_one_span_each_side_until_it_ends(otel: InProcessTelemetry) -> None:
    async with executor_stub() as (_, stub, _ch):
        with tracer.start_as_current_span("caller") as caller:
            call = stub.Execute(executor_pb2.ExecuteRequest(execution_id="exe_2", attempt=1))
            updates = [u async for u in call]
            assert await call.code() == grpc.StatusCode.OK
        spans = await finished(otel, caller.get_span_context().trace_id, 3)
    assert len(updates) == 3
    client, server = one(spans, EXECUTE, SpanKind.CLIENT), one(spans, EXECUTE, SpanKind.SERVER)
    assert parent_id(server) == client.context.span_id
    assert client.end_time is not None and server.end_time is not None


async def test_a_cancelled_call_ends_its_client_span(otel: InProcessTelemetry) -> None:
    async with executor_stub() as (_, stub, _ch):
        with tracer.start_as_current_span("caller") as caller:
            call = stub.Execute(executor_pb2.ExecuteRequest(execution_id="slow", attempt=1))
            await call.read()
            assert call.cancel()
        trace_id = caller.get_span_context().trace_id

        async def client_span_ended() -> None:
            client = one(otel.spans.in_trace(trace_id), EXECUTE, SpanKind.CLIENT)
            assert client.attributes is not None
            assert client.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]

        await eventually(client_span_ended, timeout=5)


async def test_health_checks_are_not_traced(otel: InProcessTelemetry) -> None:
    async with executor_stub() as (_, _stub, ch):
        with tracer.start_as_current_span("caller") as caller:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        await asyncio.sleep(0)  # let a client span, were there one, end
    names = [s.name for s in otel.spans.in_trace(caller.get_span_context().trace_id)]
    assert names == ["caller"]


async def test_only_the_public_api_counts_api_requests(otel: InProcessTelemetry) -> None:
    def requests(code: str) -> float:
        return otel.value("api_requests_total", method=CANCEL, code=code)

    before = (requests("OK"), requests("NOT_FOUND"), requests("INTERNAL"))
    errors_before = otel.value("api_errors_total", method=CANCEL)
    async with (
        executor_stub(api_metrics=True) as (_, public, _ch),
        executor_stub() as (
            _,
            internal,
            _ch2,
        ),
    ):
        for stub in (public, internal):
            await stub.Cancel(executor_pb2.CancelRequest(execution_id="exe_4"))
            for bad in ("missing", "boom"):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.Cancel(executor_pb2.CancelRequest(execution_id=bad))
    after = (requests("OK"), requests("NOT_FOUND"), requests("INTERNAL"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    assert otel.value("api_errors_total", method=CANCEL) == errors_before + 1
    assert otel.value("api_request_duration_seconds_count", method=CANCEL, code="OK") >= 1


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def served_metrics() -> Iterator[tuple[int, object]]:
    built = build_telemetry("models", TelemetryConfig(metrics_addr="127.0.0.1:0"))
    try:
        yield built.metrics_port, built.meter_provider
    finally:
        built.shutdown()


def test_metrics_addr_serves_prometheus_text(served_metrics: tuple[int, object]) -> None:
    port, provider = served_metrics
    counter = provider.get_meter("test").create_counter("api_requests_total")  # type: ignore[attr-defined]
    counter.add(2, {"method": "m", "code": "OK"})
    text = fetch(f"http://127.0.0.1:{port}/metrics")
    assert "# TYPE api_requests_total counter" in text
    assert 'api_requests_total{code="OK",method="m",service_name="models"} 2.0' in text


def test_shutdown_closes_the_metrics_port() -> None:
    built = build_telemetry("models", TelemetryConfig(metrics_addr="127.0.0.1:0"))
    url = f"http://127.0.0.1:{built.metrics_port}/metrics"
    fetch(url)
    built.shutdown()
    with pytest.raises(urllib.error.URLError):
        fetch(url)
