"""A real webhook service per test (PostgreSQL, JetStream, gRPC) with short retry timers,
a recording receiver on loopback, and the test's own event stream."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from comfyfleet.common.addresses import AddressPolicy
from comfyfleet.common.config import DatabaseConfig, NatsConfig
from comfyfleet.common.events import EventBus, connect_bus
from comfyfleet.common.grpcserver import channel
from comfyfleet.webhooks.v1 import webhooks_pb2_grpc
from services.webhook.config import (
    Config,
    ConsumerSettings,
    DeliverySettings,
)
from services.webhook.server import WebhookService, build_service
from tests.integration.webhook.support import Client, Receiver
from tests.support.infra import NatsInfo, NatsNames

FAST = DeliverySettings(
    retry_schedule_s=(0.05, 0.1, 0.2),
    retry_jitter=0.1,
    request_timeout_s=1.0,
    claim_lease_s=2.0,
    max_in_flight=64,
    per_subscription_concurrency=8,
    failing_subscription_concurrency=2,
    poll_interval_s=0.2,
    secret_overlap_s=3600.0,
)


@pytest.fixture
def webhook_config(fresh_database: str, nats_server: NatsInfo, nats_names: NatsNames) -> Config:
    return Config(
        grpc_addr="127.0.0.1:0",
        database=DatabaseConfig(fresh_database),
        nats=NatsConfig(
            url=nats_server.url, stream=nats_names.stream, subject_prefix=nats_names.subject_prefix
        ),
        delivery=FAST,
        consumer=ConsumerSettings(ack_wait_s=2.0, pull_expires_s=1.0),
        addresses=AddressPolicy(allow_loopback=True),
        shutdown_grace_s=2.0,
    )


StartService = Callable[..., contextlib.AbstractAsyncContextManager[WebhookService]]


@pytest.fixture
def start_service(webhook_config: Config) -> StartService:
    """``async with start_service(**delivery setting changes) as svc:`` a service (another
    replica, or a restart) on the test's database and stream."""

    def start(
        addresses: AddressPolicy | None = None, **changes: Any
    ) -> contextlib.AbstractAsyncContextManager[WebhookService]:
        cfg = dataclasses.replace(
            webhook_config,
            delivery=dataclasses.replace(webhook_config.delivery, **changes),
            addresses=addresses or webhook_config.addresses,
        )
        return build_service(cfg)

    return start


@pytest.fixture
async def service(start_service: StartService) -> AsyncIterator[WebhookService]:
    async with start_service() as running:
        yield running


@pytest.fixture
async def stub(service: WebhookService) -> AsyncIterator[webhooks_pb2_grpc.WebhookServiceStub]:
    async with channel(f"127.0.0.1:{service.port}") as ch:
        yield webhooks_pb2_grpc.WebhookServiceStub(ch)


@pytest.fixture
def tenant_a(stub: webhooks_pb2_grpc.WebhookServiceStub) -> Client:
    return Client(stub, "tenant-a")


@pytest.fixture
def tenant_b(stub: webhooks_pb2_grpc.WebhookServiceStub) -> Client:
    return Client(stub, "tenant-b")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = await Receiver().start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def bus(webhook_config: Config) -> AsyncIterator[EventBus]:
    """The test's event stream, as the scheduler publishes to it."""
    async with connect_bus(webhook_config.nats, name="test-publisher") as connected:
        yield connected
