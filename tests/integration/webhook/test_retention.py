"""The delivery log is pruned past its retention: finished deliveries and their attempts go,
pending ones stay however old, and rotated-out secrets go once they stop signing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf.duration_pb2 import Duration

from comfyfleet.common.db import open_pool
from comfyfleet.common.events import EventBus
from comfyfleet.common.grpcserver import channel
from comfyfleet.webhooks.v1 import webhooks_pb2 as pb
from comfyfleet.webhooks.v1 import webhooks_pb2_grpc
from services.webhook.config import Config
from services.webhook.retention import Retention
from services.webhook.server import MIGRATIONS, SCHEMA
from tests.integration.webhook.conftest import StartService
from tests.integration.webhook.support import Client, Receiver, answers, execution_event
from tests.support.eventually import eventually


async def _counts(conn: asyncpg.Pool) -> dict[str, int]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM deliveries GROUP BY state")
    found = {r["state"]: int(r["n"]) for r in rows}
    found["attempts"] = int(await conn.fetchval("SELECT count(*) FROM delivery_attempts"))
    found["secrets"] = int(await conn.fetchval("SELECT count(*) FROM subscription_secrets"))
    return found


async def test_prune_keeps_pending_and_recent_and_removes_the_rest(
    start_service: StartService,
    webhook_config: Config,
    receiver: Receiver,
    bus: EventBus,
) -> None:
    # Retries an hour apart: a failing receiver's delivery stays pending after its first try.
    async with (
        start_service(retry_schedule_s=(3600.0,)) as service,
        channel(f"127.0.0.1:{service.port}") as ch,
    ):
        tenant_a = Client(webhooks_pb2_grpc.WebhookServiceStub(ch), "tenant-a")
        ok = await tenant_a.subscribe(receiver.url("ok"))
        receiver.handlers["down"] = answers(500, then=500)
        failing = await tenant_a.subscribe(receiver.url("down"))
        rotated = await tenant_a.RotateSubscriptionSecret(
            pb.RotateSubscriptionSecretRequest(id=ok.id, overlap=Duration(seconds=600))
        )
        assert isinstance(rotated, pb.RotateSubscriptionSecretResponse)
        for _ in range(3):
            await bus.publish(execution_event("tenant-a", "execution.succeeded"))

        async def settled() -> None:
            done = await tenant_a.deliveries(ok.id)
            assert [d.state for d in done] == [pb.DELIVERY_STATE_SUCCEEDED] * 3
            waiting = await tenant_a.deliveries(failing.id)
            assert len(waiting) == 3 and all(d.attempts == 1 for d in waiting)
            assert all(d.state == pb.DELIVERY_STATE_PENDING for d in waiting)

        await eventually(settled)

    async with open_pool(webhook_config.database.url, SCHEMA, MIGRATIONS) as pool:
        before = await _counts(pool)
        assert before == {"succeeded": 3, "pending": 3, "attempts": 6, "secrets": 3}
        retention = Retention(pool, retention_s=7 * 24 * 3600.0, interval_s=3600.0)

        # Nothing is old enough yet.
        nothing = await retention.prune()
        assert (nothing.deliveries, nothing.secrets) == (0, 0)
        assert await _counts(pool) == before

        # Eight days on: the succeeded deliveries and their attempts go, the pending ones
        # and their attempts stay, and so do the two current secrets.
        later = await retention.prune(now=datetime.now(UTC) + timedelta(days=8))
        assert (later.deliveries, later.secrets) == (3, 1)
        assert await _counts(pool) == {"pending": 3, "attempts": 3, "secrets": 2}

    # The service's own API agrees.
    async with (
        start_service(retry_schedule_s=(3600.0,)) as service,
        channel(f"127.0.0.1:{service.port}") as ch,
    ):
        tenant_a = Client(webhooks_pb2_grpc.WebhookServiceStub(ch), "tenant-a")
        assert await tenant_a.deliveries(ok.id) == []
        assert len(await tenant_a.deliveries(failing.id)) == 3
