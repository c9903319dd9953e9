"""Wiring of the webhook service: database, event stream, workers and the gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from comfyfleet.common.db import open_pool
from comfyfleet.common.events import connect_bus
from comfyfleet.common.grpcserver import RunningServer, registration, serve
from comfyfleet.webhooks.v1 import webhooks_pb2_grpc
from services.webhook.config import Config
from services.webhook.deliveries import Deliveries
from services.webhook.dispatcher import Dispatcher
from services.webhook.intake import Intake
from services.webhook.queue import DeliveryQueue
from services.webhook.retention import Retention
from services.webhook.sender import Sender
from services.webhook.servicer import WebhookServicer
from services.webhook.subscriptions import Subscriptions

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "webhook"


@dataclass
class WebhookService:
    grpc: RunningServer

    @property
    def port(self) -> int:
        return self.grpc.port


@asynccontextmanager
async def build_service(cfg: Config) -> AsyncIterator[WebhookService]:
    """Runs everything until exit; then, in order: stop serving calls, stop fetching events,
    let attempts in flight finish within grace, drain NATS, close the database."""
    policy = cfg.addresses
    settings = cfg.delivery
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            open_pool(
                cfg.database.url,
                SCHEMA,
                MIGRATIONS,
                max_size=cfg.db_pool_size,
                apply=cfg.database.migrate_on_start,
            )
        )
        bus = await stack.enter_async_context(connect_bus(cfg.nats, name="webhook"))
        sender = await stack.enter_async_context(
            Sender.open(
                policy, timeout_s=settings.request_timeout_s, max_connections=settings.max_in_flight
            )
        )
        queue = DeliveryQueue(pool, disable_after_s=settings.disable_after_s)
        dispatcher = Dispatcher(queue, sender, settings)
        await stack.enter_async_context(dispatcher.running(cfg.shutdown_grace_s))
        intake = Intake(bus, pool, cfg.consumer, dispatcher, lease_s=settings.claim_lease_s)
        await stack.enter_async_context(intake.running())
        retention = Retention(pool, settings.retention_s, settings.retention_interval_s)
        await stack.enter_async_context(retention.running())
        servicer = WebhookServicer(
            Subscriptions(
                pool,
                policy,
                default_overlap_s=settings.secret_overlap_s,
                max_overlap_s=settings.max_secret_overlap_s,
            ),
            Deliveries(pool, on_due=dispatcher.wake),
        )
        reg = registration(servicer, webhooks_pb2_grpc, "WebhookService")
        server = await stack.enter_async_context(
            serve(cfg.grpc_addr, [reg], grace=cfg.shutdown_grace_s)
        )
        yield WebhookService(server)
