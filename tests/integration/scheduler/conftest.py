"""A real scheduler (PostgreSQL, NATS JetStream, S3, gRPC) per test, with fast timers."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import nats
import pytest
from nats.js.errors import NotFoundError

from comfyfleet.common.config import DatabaseConfig, NatsConfig, S3Config
from comfyfleet.common.grpcserver import channel
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.environments.v1 import environments_pb2_grpc
from comfyfleet.executions.v1 import executions_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2_grpc
from services.scheduler.config import Config, SchedulerSettings
from services.scheduler.server import Scheduler, running_scheduler
from tests.support.infra import NatsInfo, NatsNames, S3Info

FAST = SchedulerSettings(
    lease_s=1.0,
    heartbeat_interval_s=0.3,
    backoff_base_s=0.2,
    backoff_max_s=1.0,
    poll_interval_s=0.1,
    reaper_interval_s=0.1,
    shutdown_grace_s=2.0,
    output_slots=4,
)


@pytest.fixture
async def own_stream(nats_server: NatsInfo, nats_names: NatsNames) -> AsyncIterator[NatsNames]:
    """The test's stream name, and the stream deleted after the test: each stream reserves
    its size limit in JetStream's store, which a long session would otherwise fill."""
    yield nats_names
    nc = await nats.connect(nats_server.url)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(nats_names.stream)
    finally:
        await nc.close()


@pytest.fixture
def scheduler_config(
    fresh_database: str,
    nats_server: NatsInfo,
    own_stream: NatsNames,
    s3_server: S3Info,
    s3_bucket: str,
) -> Config:
    nats_names = own_stream
    return Config(
        grpc_addr="127.0.0.1:0",
        database=DatabaseConfig(fresh_database),
        nats=NatsConfig(
            url=nats_server.url, stream=nats_names.stream, subject_prefix=nats_names.subject_prefix
        ),
        s3=S3Config(
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            region=s3_server.region,
            bucket=s3_bucket,
        ),
        settings=FAST,
        schema="scheduler",
        # Outside the event stream's subjects, and the test's own.
        breaker_subject=f"{nats_names.subject_prefix.replace('.', '_')}.breakers",
    )


StartScheduler = Callable[..., contextlib.AbstractAsyncContextManager[Scheduler]]


@pytest.fixture
def start_scheduler(scheduler_config: Config) -> StartScheduler:
    """``async with start_scheduler(**changes) as s:`` another replica on the test's
    database, stream and bucket; changes name Config fields (``runpod=``, ``models_addr=``)
    or SchedulerSettings fields."""

    def start(
        replica: str = "scheduler", **changes: Any
    ) -> contextlib.AbstractAsyncContextManager[Scheduler]:
        top = {k: v for k, v in changes.items() if k in Config.__dataclass_fields__}
        settings = dataclasses.replace(
            scheduler_config.settings, **{k: v for k, v in changes.items() if k not in top}
        )
        cfg = dataclasses.replace(scheduler_config, settings=settings, replica=replica, **top)
        return running_scheduler(cfg)

    return start


@pytest.fixture
async def scheduler(start_scheduler: StartScheduler) -> AsyncIterator[Scheduler]:
    async with start_scheduler() as running:
        yield running


@dataclasses.dataclass
class Clients:
    """Stubs of one scheduler, calling as a tenant the way the gateway does."""

    address: str
    executions: executions_pb2_grpc.ExecutionServiceStub
    scheduler: scheduler_pb2_grpc.SchedulerServiceStub
    environments: environments_pb2_grpc.EnvironmentServiceStub

    @staticmethod
    def as_tenant(tenant: str) -> tuple[tuple[str, str], ...]:
        return tenant_metadata(tenant)


@contextlib.asynccontextmanager
async def clients_of(running: Scheduler) -> AsyncIterator[Clients]:
    address = f"127.0.0.1:{running.port}"
    async with channel(address) as ch:
        yield Clients(
            address,
            executions_pb2_grpc.ExecutionServiceStub(ch),
            scheduler_pb2_grpc.SchedulerServiceStub(ch),
            environments_pb2_grpc.EnvironmentServiceStub(ch),
        )


@pytest.fixture
async def clients(scheduler: Scheduler) -> AsyncIterator[Clients]:
    async with clients_of(scheduler) as stubs:
        yield stubs


def code_of(err: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return err.code()
