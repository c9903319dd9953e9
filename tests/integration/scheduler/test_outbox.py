"""The outbox relay keeps events while NATS is down and publishes them, once, when it is back."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.devstack.nats import NatsServer
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


async def _all_published(pool: object) -> None:
    pending = await pool.fetchval(  # type: ignore[attr-defined]
        "SELECT count(*) FROM outbox WHERE published_at IS NULL"
    )
    assert pending == 0
