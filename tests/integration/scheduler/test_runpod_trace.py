"""An attempt sent to RunPod stays in the execution's trace: the scheduler's ``runpod job``
span puts its traceparent in the job input, and the real RunPod worker (under the SDK's
local API server, exporting over OTLP) continues it down to the workflow's nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.trace import SpanKind

from comfyfleet.common.telemetry import tracer
from services.scheduler.providers.runpod import RunpodConfig
from tests.e2e.otlp import SpanRecord, TraceReceiver, trace_receiver
from tests.integration.scheduler.conftest import StartScheduler, clients_of
from tests.integration.scheduler.helpers import STATE, create, wait_for_state
from tests.integration.scheduler.runpod_endpoint import sdk_endpoint
from tests.support.eventually import eventually
from tests.support.paths import comfyui_ref
from tests.support.telemetry import InProcessTelemetry, installed_telemetry

TENANT = "acme"
WORKFLOW = (comfyui_ref() / "workflows" / "a_tiny.json").read_text()


@pytest.fixture(scope="module")
def otlp() -> Iterator[TraceReceiver]:
    with trace_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
async def sdk_url(
    tmp_path_factory: pytest.TempPathFactory, otlp: TraceReceiver
) -> AsyncIterator[str]:
    traced = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    async with sdk_endpoint(tmp_path_factory.mktemp("runpod"), traced) as url:
        yield url


async def test_a_runpod_attempt_is_in_the_executions_trace(
    start_scheduler: StartScheduler, sdk_url: str, otlp: TraceReceiver
) -> None:
    otel: InProcessTelemetry = installed_telemetry()
    endpoint = RunpodConfig(
        endpoint_url=sdk_url,
        endpoint_id="local-sdk",
        max_in_flight=1,
        stream_timeout_s=60.0,
        poll_interval_s=0.1,
        start_timeout_s=60.0,
    )
    async with start_scheduler(runpod=endpoint) as s, clients_of(s) as clients:
        with tracer.start_as_current_span("caller") as caller:
            created = await create(clients, TENANT, workflow_json=WORKFLOW)
        done = await wait_for_state(
            clients, TENANT, created.id, STATE.EXECUTION_STATE_SUCCEEDED, wait_s=90
        )
    assert done.provider == "runpod"
    trace_id = caller.get_span_context().trace_id

    async def worker_spans() -> list[SpanRecord]:
        spans = otlp.trace(f"{trace_id:032x}")
        # The worker's job span ends last, and may come in a later export than the nodes'.
        names = {s.name for s in spans}
        assert {"node SaveImage", "runpod job"} <= names, sorted(names)
        return spans

    worker = await eventually(worker_spans, timeout=30)
    [job] = [s for s in otel.spans.in_trace(trace_id) if s.name == "runpod job"]
    assert job.kind is SpanKind.CLIENT and job.parent is not None
    [attempt] = [s for s in otel.spans.in_trace(trace_id) if s.name == "scheduler attempt"]
    assert job.parent.span_id == attempt.context.span_id
    assert job.attributes is not None and job.attributes["comfyfleet.execution_id"] == created.id

    by_name = {s.name: s for s in worker}
    served = by_name["runpod job"]
    assert (served.service, served.kind) == ("executor", "server")
    assert served.parent_id == f"{job.context.span_id:016x}"
    assert by_name["executor attempt"].parent_id == served.span_id
    nodes = [s for s in worker if s.name.startswith("node ")]
    assert {"node EmptyImage", "node ImageInvert", "node SaveImage"} <= {n.name for n in nodes}
    assert {n.parent_id for n in nodes} == {by_name["executor attempt"].span_id}
    assert not any(s.failed for s in worker)
