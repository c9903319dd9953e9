"""The outbox relay keeps events while NATS is down and publishes them, once, when it is back."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.devstack.nats import NatsServer
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.config import Config
from services.scheduler.server import running_scheduler
from tests.integration.scheduler.conftest import clients_of
from tests.integration.scheduler.helpers import create, stream_has, stream_messages
from tests.support.eventually import eventually

TENANT = "acme"


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS server of this test's own, so stopping it disturbs no other test."""
    data = tmp_path / "nats"
    data.mkdir(mode=0o755)
    with NatsServer(data_dir=data) as server:
        yield server


async def test_events_wait_in_the_outbox_while_nats_is_down(
    scheduler_config: Config, own_nats: NatsServer
) -> None:
    cfg = dataclasses.replace(
        scheduler_config, nats=dataclasses.replace(scheduler_config.nats, url=own_nats.url)
    )
    stream = cfg.nats.stream
    async with running_scheduler(cfg) as scheduler, clients_of(scheduler) as clients:
        before = await create(clients, TENANT)
        await stream_has(own_nats.url, stream, before.id, 1)

        await asyncio.to_thread(own_nats.stop)
        during = await create(clients, TENANT)  # accepted while NATS is down

        async def waiting() -> None:
            pending = await scheduler.relay.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )
            assert pending == 1

        await eventually(waiting)
        await asyncio.to_thread(own_nats.start)
        await stream_has(own_nats.url, stream, during.id, 1)
        await eventually(lambda: _all_published(scheduler.relay.pool), timeout=20)
    messages = await stream_messages(own_nats.url, stream)
    assert [e.execution_id for _, e in messages] == [before.id, during.id]
    assert [h["Nats-Msg-Id"] for h, _ in messages] == [e.event_id for _, e in messages]


async def test_a_backlog_goes_out_in_waves_each_execution_in_order_and_once(
    scheduler_config: Config, own_nats: NatsServer
) -> None:
    """Events that piled up while NATS was down leave in batches whose publishes are not
    awaited one by one: each execution's still reach the stream in sequence order, once."""
    cfg = dataclasses.replace(
        scheduler_config, nats=dataclasses.replace(scheduler_config.nats, url=own_nats.url)
    )
    async with running_scheduler(cfg) as scheduler, clients_of(scheduler) as clients:
        await asyncio.to_thread(own_nats.stop)
        made = [await create(clients, TENANT) for _ in range(40)]
        for execution in made:  # queued, then cancelled: two events each, in one batch
            await clients.executions.CancelExecution(
                executions_pb2.CancelExecutionRequest(id=execution.id),
                metadata=clients.as_tenant(TENANT),
            )
        await asyncio.to_thread(own_nats.start)
        await eventually(lambda: _all_published(scheduler.relay.pool), timeout=20)
        # A second relay round finds nothing left to send.
        assert await scheduler.relay.relay_once() == 0
    messages = await stream_messages(own_nats.url, cfg.nats.stream)
    ids = [h["Nats-Msg-Id"] for h, _ in messages]
    assert len(ids) == len(set(ids)) == 2 * len(made)
    for execution in made:
        mine = [e for _, e in messages if e.execution_id == execution.id]
        assert [(e.sequence, e.event_type) for e in mine] == [
            (1, "execution.queued"),
            (2, "execution.cancelled"),
        ]


async def _all_published(pool: object) -> None:
    pending = await pool.fetchval(  # type: ignore[attr-defined]
        "SELECT count(*) FROM outbox WHERE published_at IS NULL"
    )
    assert pending == 0
