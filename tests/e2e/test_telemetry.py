"""Telemetry of the running platform: one execution is one connected trace across the
gateway, scheduler, executor (down to its nodes) and webhook processes, exported over OTLP;
every service serves /metrics with the platform's names, and a request moves them."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import grpc
import pytest

from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from tests.e2e.conftest import Platform
from tests.e2e.otlp import SpanRecord, TraceReceiver, trace_receiver
from tests.e2e.receiver import Receiver, webhook_receiver
from tests.support import eventually
from tests.support.paths import comfyui_ref

WORKFLOW = (comfyui_ref() / "workflows" / "a_tiny.json").read_text()
SERVICES = ("gateway", "scheduler", "models", "webhook", "executor")
CREATE = "comfyfleet.executions.v1.ExecutionService/CreateExecution"
GET = "comfyfleet.executions.v1.ExecutionService/GetExecution"


@pytest.fixture(scope="module")
def otlp() -> Iterator[TraceReceiver]:
    with trace_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def platform_extra_env(otlp: TraceReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        # Spans leave each process within 100 ms rather than 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        # Every service serves /metrics on a port of its own choosing, logged at start.
        "COMFYFLEET_METRICS_ADDR": "127.0.0.1:0",
    }


def metrics_url(platform: Platform, service: str) -> str:
    log = (platform.log_dir / f"{service}.log").read_text()
    [port] = re.findall(r"serves metrics on port (\d+)", log)[-1:]
    return f"http://127.0.0.1:{port}/metrics"


def scrape(platform: Platform, service: str) -> str:
    with urllib.request.urlopen(metrics_url(platform, service), timeout=5) as response:
        return str(response.read().decode())


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` that carry ``labels``."""
    total = 0.0
    for line in text.splitlines():
        sample, _, number = line.rpartition(" ")
        if sample.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in sample for k, v in labels.items()):
            total += float(number)
    return total


def admin(platform: Platform) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {platform.admin_key}"),)


async def new_key(ch: grpc.aio.Channel, platform: Platform, name: str, rate: float = 0) -> str:
    stub = tenants_pb2_grpc.TenantServiceStub(ch)
    tenant = await stub.CreateTenant(
        tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name=name)),
        metadata=admin(platform),
    )
    key = tenants_pb2.ApiKey(rate_limit=tenants_pb2.RateLimit(requests_per_second=rate, burst=1))
    created = await stub.CreateApiKey(
        tenants_pb2.CreateApiKeyRequest(tenant_id=tenant.id, api_key=key),
        metadata=admin(platform),
    )
    return created.secret


@dataclass(frozen=True)
class TracedRun:
    """One execution submitted under a trace the test chose, and the metrics around it."""

    trace_id: str
    root_span_id: str
    execution_id: str
    before: dict[str, str]
    after: dict[str, str]


async def run_traced(platform: Platform, hooks: Receiver) -> tuple[str, str, str]:
    trace_id, root = secrets.token_hex(16), secrets.token_hex(8)
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as ch:
        auth = (("authorization", f"Bearer {await new_key(ch, platform, 'traced')}"),)
        await webhooks_pb2_grpc.WebhookServiceStub(ch).CreateSubscription(
            webhooks_pb2.CreateSubscriptionRequest(
                subscription=webhooks_pb2.Subscription(url=hooks.url, event_types=["execution.*"])
            ),
            metadata=auth,
        )
        executions = executions_pb2_grpc.ExecutionServiceStub(ch)
        created = await executions.CreateExecution(
            executions_pb2.CreateExecutionRequest(workflow_json=WORKFLOW),
            metadata=(*auth, ("traceparent", f"00-{trace_id}-{root}-01")),
        )

        async def succeeded() -> None:
            got = await executions.GetExecution(
                executions_pb2.GetExecutionRequest(id=created.id), metadata=auth
            )
            assert got.state == executions_pb2.EXECUTION_STATE_SUCCEEDED, got

        await eventually(succeeded, timeout=60)
    return trace_id, root, created.id


@pytest.fixture(scope="module")
async def traced_run(platform: Platform) -> TracedRun:
    before = {s: scrape(platform, s) for s in SERVICES}
    with webhook_receiver() as hooks:
        trace_id, root, execution_id = await run_traced(platform, hooks)

        async def delivered() -> None:
            types = [json.loads(r.body)["type"] for r in hooks.requests]
            assert "execution.succeeded" in types

        await eventually(delivered, timeout=30)

    async def moved() -> dict[str, str]:
        after = {s: await asyncio.to_thread(scrape, platform, s) for s in SERVICES}
        assert value(after["webhook"], "webhook_deliveries_total", outcome="succeeded") > value(
            before["webhook"], "webhook_deliveries_total", outcome="succeeded"
        )
        return after

    after = await eventually(moved, timeout=30)
    return TracedRun(trace_id, root, execution_id, before, after)


def names(spans: list[SpanRecord], service: str) -> set[str]:
    return {s.name for s in spans if s.service == service}


async def test_one_execution_is_one_connected_trace(
    traced_run: TracedRun, otlp: TraceReceiver
) -> None:
    async def whole() -> list[SpanRecord]:
        spans = otlp.trace(traced_run.trace_id)
        assert "webhook deliver" in names(spans, "webhook")
        assert {"node EmptyImage", "node ImageInvert", "node SaveImage"} <= names(spans, "executor")
        # Each service exports in batches of its own: wait for every span checked below.
        assert {"comfyfleet.executor.v1.ExecutorService/Execute", "executor attempt"} <= names(
            spans, "executor"
        )
        assert {CREATE, "scheduler attempt"} <= names(spans, "scheduler")
        assert CREATE in names(spans, "gateway")
        return spans

    spans = await eventually(whole, timeout=30)
    assert CREATE in names(spans, "gateway")
    scheduler = names(spans, "scheduler")
    assert {CREATE, "scheduler attempt"} <= scheduler
    assert any(name.startswith("publish ") for name in scheduler)
    assert {"comfyfleet.executor.v1.ExecutorService/Execute", "executor attempt"} <= names(
        spans, "executor"
    )
    # Connected: every span hangs off another span of the trace, or off the caller's.
    ids = {s.span_id for s in spans} | {traced_run.root_span_id}
    assert [s for s in spans if s.parent_id not in ids] == []
    by_id = {s.span_id: s for s in spans}
    for node in (s for s in spans if s.name.startswith("node ")):
        assert by_id[node.parent_id].name == "executor attempt"
        assert node.attributes["comfyfleet.execution_id"] == traced_run.execution_id
    deliveries = [s for s in spans if s.name == "webhook deliver"]
    assert all(by_id[d.parent_id].kind == "producer" for d in deliveries)
    assert not any(s.failed for s in spans)


async def test_a_rest_call_continues_the_callers_trace(
    platform: Platform, otlp: TraceReceiver
) -> None:
    """The same over REST: the gateway's HTTP span is a child of the caller's span, and the
    execution's spans down to its nodes and webhook deliveries are in the caller's trace."""
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    with webhook_receiver() as hooks:
        async with grpc.aio.insecure_channel(platform.addrs.gateway) as ch:
            key = await new_key(ch, platform, "traced-rest")
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(platform.rest_url, headers=auth) as http:
            subscription = {"url": hooks.url, "eventTypes": ["execution.*"]}
            async with http.post("/v1/webhooks", json=subscription) as response:
                assert response.status == 200, await response.text()
            traced = {"traceparent": f"00-{trace_id}-{caller}-01", "tracestate": "caller=rest"}
            body = {"workflow": json.loads(WORKFLOW)}
            async with http.post("/v1/executions", json=body, headers=traced) as response:
                assert response.status == 200, await response.text()
                execution_id = (await response.json())["id"]
                answered = response.headers["traceparent"]

        async def whole() -> list[SpanRecord]:
            spans = otlp.trace(trace_id)
            assert "webhook deliver" in names(spans, "webhook")
            assert "node SaveImage" in names(spans, "executor")
            assert {CREATE, "scheduler attempt"} <= names(spans, "scheduler")
            # The HTTP span ends with the response, so it may come in a later export.
            assert "POST /v1/executions" in names(spans, "gateway")
            return spans

        spans = await eventually(whole, timeout=60)
    [root] = [s for s in spans if s.name == "POST /v1/executions"]
    assert (root.service, root.kind, root.parent_id) == ("gateway", "server", caller)
    assert root.attributes["http.response.status_code"] == 200
    assert answered == f"00-{trace_id}-{root.span_id}-01"
    assert CREATE in names(spans, "gateway")
    ids = {s.span_id for s in spans} | {caller}
    assert [s for s in spans if s.parent_id not in ids] == []
    nodes = [s for s in spans if s.name.startswith("node ")]
    assert {n.attributes["comfyfleet.execution_id"] for n in nodes} == {execution_id}


def test_every_service_serves_its_metrics(traced_run: TracedRun) -> None:
    after = traced_run.after
    for service in SERVICES:
        assert value(after[service], "container_restarts_total", service=service) == 1
        assert value(after[service], "memory_usage_bytes") > 0
        assert value(after[service], "process_start_time_seconds") > 0
    moved = {
        ("gateway", "api_requests_total", (("method", CREATE), ("code", "OK"))),
        ("gateway", "api_request_duration_seconds_count", (("method", CREATE),)),
        ("scheduler", "workflow_queue_time_seconds_count", ()),
        ("executor", "workflow_execution_duration_seconds_count", (("outcome", "succeeded"),)),
        ("webhook", "webhook_delivery_duration_seconds_count", (("outcome", "succeeded"),)),
    }
    for service, name, labels in moved:
        changed = value(after[service], name, **dict(labels)) - value(
            traced_run.before[service], name, **dict(labels)
        )
        assert changed >= 1, (service, name)
    assert "queue_depth{" in after["scheduler"]
    assert "cache_hit_rate" not in after["executor"]  # a_tiny asks for no model


async def test_api_errors_and_rate_limits_are_counted(platform: Platform) -> None:
    before = scrape(platform, "gateway")
    async with grpc.aio.insecure_channel(platform.addrs.gateway) as ch:
        auth = (("authorization", f"Bearer {await new_key(ch, platform, 'limited', 0.01)}"),)
        executions = executions_pb2_grpc.ExecutionServiceStub(ch)
        request = executions_pb2.GetExecutionRequest(id="exe_missing")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await executions.GetExecution(request, metadata=auth)
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await executions.GetExecution(request, metadata=auth)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    after = scrape(platform, "gateway")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("api_requests_total", method=GET, code="NOT_FOUND") == 1
    assert delta("api_requests_total", method=GET, code="RESOURCE_EXHAUSTED") == 1
    assert delta("api_errors_total", method=GET) == 0  # the callers' mistakes, not ours
    assert delta("rate_limit_violations_total") == 1
