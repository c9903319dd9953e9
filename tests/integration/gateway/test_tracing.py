"""Tracing at the gateway with a real scheduler behind it: a REST request continues the
caller's W3C trace context, and streams end their spans without the context errors
OpenTelemetry logs when a context is detached somewhere other than where it was attached."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from comfyfleet.common.config import DatabaseConfig, NatsConfig
from comfyfleet.common.events import connect_bus
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from services.scheduler.config import Config as SchedulerConfig
from services.scheduler.server import running_scheduler
from tests.integration.gateway.conftest import Gw, StartGateway
from tests.integration.scheduler.conftest import FAST
from tests.support.eventually import eventually
from tests.support.infra import NatsInfo, NatsNames, S3Info
from tests.support.paths import comfyui_ref
from tests.support.telemetry import InProcessTelemetry, installed_telemetry

WORKFLOW = (comfyui_ref() / "workflows" / "a_tiny.json").read_text()
CREATE = "comfyfleet.executions.v1.ExecutionService/CreateExecution"


@pytest.fixture
def otel() -> InProcessTelemetry:
    return installed_telemetry()


@pytest.fixture
async def scheduler_addr(
    fresh_database: str,
    nats_server: NatsInfo,
    nats_names: NatsNames,
    s3_server: S3Info,
    s3_bucket: str,
) -> AsyncIterator[str]:
    nats = NatsConfig(nats_server.url, nats_names.stream, nats_names.subject_prefix)
    cfg = SchedulerConfig(
        grpc_addr="127.0.0.1:0",
        database=DatabaseConfig(fresh_database),
        nats=nats,
        s3=s3_server.config(s3_bucket),
        settings=FAST,
    )
    try:
        async with running_scheduler(cfg) as scheduler:
            yield f"127.0.0.1:{scheduler.port}"
    finally:
        # Each stream reserves its byte limit of the test server's JetStream storage.
        async with connect_bus(nats, name="cleanup") as bus:
            await bus.js.delete_stream(nats_names.stream)


@pytest.fixture
async def gw(start_gateway: StartGateway, scheduler_addr: str) -> AsyncIterator[Gw]:
    async with start_gateway(scheduler_addr=scheduler_addr) as gw:
        yield gw


async def test_leaving_a_watch_mid_stream_logs_no_context_error(
    gw: Gw, otel: InProcessTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="opentelemetry")
    executions = executions_pb2_grpc.ExecutionServiceStub(gw.channel)
    created = await executions.CreateExecution(
        executions_pb2.CreateExecutionRequest(workflow_json=WORKFLOW), metadata=gw.admin
    )
    for _ in range(3):
        call = executions.WatchExecution(
            executions_pb2.WatchExecutionRequest(id=created.id), metadata=gw.admin
        )
        first = await call.read()
        assert first.execution_id == created.id
        call.cancel()
    # A whole stream, ended by the server: no executor runs the execution, so cancel it.
    await executions.CancelExecution(
        executions_pb2.CancelExecutionRequest(id=created.id), metadata=gw.admin
    )
    events = [
        e
        async for e in executions.WatchExecution(
            executions_pb2.WatchExecutionRequest(id=created.id), metadata=gw.admin
        )
    ]
    assert events[-1].event_type == "execution.cancelled"
    # A stream left at a yield is closed by the event loop's finalizer, in a task of its own.
    await asyncio.sleep(0.2)
    gc.collect()
    await asyncio.sleep(0.2)
    troubles = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert troubles == []


async def test_a_rest_request_continues_the_callers_trace(gw: Gw, otel: InProcessTelemetry) -> None:
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    headers = {
        "traceparent": f"00-{trace_id}-{caller}-01",
        "tracestate": "vendor=opaque",
        **dict(gw.admin),
    }
    async with (
        aiohttp.ClientSession(gw.rest_url, headers=headers) as http,
        http.post("/v1/executions", json={"workflow": json.loads(WORKFLOW)}) as response,
    ):
        assert response.status == 200, await response.text()
        answered = response.headers["traceparent"]

    async def whole() -> list[ReadableSpan]:
        spans = otel.spans.in_trace(int(trace_id, 16))
        # REST front -> gateway -> scheduler: a client and a server span each hop.
        assert sum(s.name == CREATE for s in spans) == 4, [s.name for s in spans]
        return spans

    spans = await eventually(whole, timeout=10)
    [root] = [s for s in spans if s.name == "POST /v1/executions"]
    assert root.kind is SpanKind.SERVER
    assert root.parent is not None and f"{root.parent.span_id:016x}" == caller
    assert root.attributes is not None
    assert root.attributes["http.route"] == "/v1/executions"
    assert root.attributes["http.response.status_code"] == 200
    assert root.context.trace_state.get("vendor") == "opaque"
    assert answered == f"00-{trace_id}-{root.context.span_id:016x}-01"
    chain = sorted(s.kind.name for s in spans if s.name == CREATE)
    assert chain == ["CLIENT", "CLIENT", "SERVER", "SERVER"]
    # Every span of the gateway and the scheduler descends from the request's span.
    by_id = {s.context.span_id: s for s in spans}
    for span in spans:
        ancestor = span
        while ancestor.parent is not None and ancestor.parent.span_id in by_id:
            ancestor = by_id[ancestor.parent.span_id]
        assert ancestor is root, span.name


async def test_a_rest_request_without_a_trace_starts_one(gw: Gw, otel: InProcessTelemetry) -> None:
    async with (
        aiohttp.ClientSession(gw.rest_url, headers=dict(gw.admin)) as http,
        http.get("/v1/executions/exe_missing") as response,
    ):
        assert response.status == 404
        answered = response.headers["traceparent"]
    _, trace_id, span_id, _ = answered.split("-")

    async def server_span() -> ReadableSpan:
        [found] = [
            s
            for s in otel.spans.in_trace(int(trace_id, 16))
            if s.context.span_id == int(span_id, 16)
        ]
        return found

    root = await eventually(server_span, timeout=5)
    assert (root.name, root.kind, root.parent) == ("GET /v1/executions/{id}", SpanKind.SERVER, None)
    assert not root.status.is_ok or root.status.status_code is StatusCode.UNSET
