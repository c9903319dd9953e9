"""queue_depth from real schedulers: by priority and tenant, a drained slice reads 0, and
one replica reports at a time (each is its own process in production: two reporting the
same queue would double sum(queue_depth))."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import nats
import nats.js.errors
import pytest

from comfyfleet.common.config import DatabaseConfig, NatsConfig
from comfyfleet.common.db import open_pool
from comfyfleet.common.grpcserver import channel
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from services.scheduler.config import Config
from services.scheduler.queue_metrics import QueueDepthReporter
from services.scheduler.server import MIGRATIONS, Scheduler, running_scheduler
from tests.support import eventually
from tests.support.infra import NatsInfo, NatsNames, S3Info
from tests.support.paths import comfyui_ref
from tests.support.telemetry import InProcessTelemetry, installed_telemetry

WORKFLOW = (comfyui_ref() / "workflows" / "a_tiny.json").read_text()


@pytest.fixture
async def config(
    fresh_database: str,
    nats_server: NatsInfo,
    nats_names: NatsNames,
    s3_server: S3Info,
    s3_bucket: str,
) -> AsyncIterator[Config]:
    yield Config(
        grpc_addr="127.0.0.1:0",
        database=DatabaseConfig(fresh_database),
        nats=NatsConfig(nats_server.url, nats_names.stream, nats_names.subject_prefix),
        s3=s3_server.config(s3_bucket),
        breaker_subject=f"{nats_names.subject_prefix.replace('.', '_')}.breakers",
    )
    # The schedulers made the stream; each reserves its byte limit of the test server's
    # JetStream storage.
    nc = await nats.connect(nats_server.url)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(nats_names.stream)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def executions_of(
    scheduler: Scheduler,
) -> AsyncIterator[executions_pb2_grpc.ExecutionServiceStub]:
    async with channel(f"127.0.0.1:{scheduler.port}") as ch:
        yield executions_pb2_grpc.ExecutionServiceStub(ch)


async def submit(
    stub: executions_pb2_grpc.ExecutionServiceStub, tenant: str, priority: int
) -> executions_pb2.Execution:
    request = executions_pb2.CreateExecutionRequest(workflow_json=WORKFLOW, priority=priority)
    return await stub.CreateExecution(request, metadata=tenant_metadata(tenant))


async def test_queue_depth_by_priority_and_tenant(config: Config) -> None:
    otel: InProcessTelemetry = installed_telemetry()
    a, b = f"ten_qa_{id(config)}", f"ten_qb_{id(config)}"
    async with (
        running_scheduler(config) as first,
        running_scheduler(dataclasses.replace(config, replica="second")) as second,
        executions_of(first) as one,
        executions_of(second) as other,
    ):
        # No executor is registered: everything stays queued.
        queued_a = [await submit(one, a, 0), await submit(other, a, 0)]
        await submit(other, b, 5)

        async def counted() -> None:
            assert otel.samples("queue_depth", tenant=a, priority="0", environment="native") == [2]
            assert otel.samples("queue_depth", tenant=b, priority="5") == [1]

        await eventually(counted, timeout=15)
        for execution in queued_a:
            request = executions_pb2.CancelExecutionRequest(id=execution.id)
            await one.CancelExecution(request, metadata=tenant_metadata(a))

        async def drained_reads_zero() -> None:
            assert otel.samples("queue_depth", tenant=a, priority="0") == [0.0]
            assert otel.samples("queue_depth", tenant=b, priority="5") == [1]

        await eventually(drained_reads_zero, timeout=15)
    assert otel.samples("queue_depth", tenant=a) == []  # stopped schedulers report nothing


async def test_one_replica_reports_at_a_time(fresh_database: str) -> None:
    async with open_pool(fresh_database, "scheduler", MIGRATIONS) as pool:
        first, second = QueueDepthReporter(pool, "scheduler"), QueueDepthReporter(pool, "scheduler")
        try:
            await first.sample()
            await second.sample()
            # An empty queue still reads 0, so that the metric exists.
            assert (first.gauge.depths, second.gauge.depths) == ({(0, "", ""): 0}, {})
            await first.release()  # the leading replica goes away: the other takes over
            await second.sample()
            await first.sample()
            assert (first.gauge.depths, second.gauge.depths) == ({}, {(0, "", ""): 0})
        finally:
            await first.release()
            await second.release()


async def test_the_reporter_carries_on_after_its_session_is_ended(fresh_database: str) -> None:
    """The database restarting (or an admin) ends the session holding the reporter's lock:
    the next round reports nothing, and the one after leads again on a new session."""
    async with open_pool(fresh_database, "scheduler", MIGRATIONS) as pool:
        reporter = QueueDepthReporter(pool, "scheduler")
        try:
            await reporter.sample()
            assert reporter._conn is not None
            leading = await reporter._conn.fetchval("SELECT pg_backend_pid()")
            assert await pool.fetchval("SELECT pg_terminate_backend($1)", leading)

            async def leads_again() -> None:
                await reporter.sample()
                assert reporter.gauge.depths == {(0, "", ""): 0}
                assert reporter._conn is not None
                assert await reporter._conn.fetchval("SELECT pg_backend_pid()") != leading

            await eventually(leads_again, timeout=10)
        finally:
            await reporter.release()
