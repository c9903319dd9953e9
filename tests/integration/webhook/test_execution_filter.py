"""An event's own webhook_events (its execution's choice) narrow every subscription's filter."""

from __future__ import annotations

import json
from collections.abc import Sequence

from comfyfleet.common.events import EventBus
from comfyfleet.executions.v1 import executions_pb2
from services.webhook.config import Config
from services.webhook.server import WebhookService
from tests.integration.webhook.support import Client, Receiver, execution_event
from tests.support.eventually import eventually

TYPES = ("execution.queued", "execution.running", "execution.progress", "execution.succeeded")


def history(*allowed: str) -> list[executions_pb2.WorkflowExecutionEvent]:
    """One execution's events, each carrying the execution's choice of webhook events."""
    first = execution_event("tenant-a", TYPES[0])
    events = [first] + [execution_event("tenant-a", t, first.execution_id) for t in TYPES[1:]]
    for event in events:
        event.webhook_events.extend(allowed)
    return events


async def test_a_delivery_needs_both_the_subscription_and_the_execution_to_choose_it(
    service: WebhookService,
    tenant_a: Client,
    receiver: Receiver,
    bus: EventBus,
    webhook_config: Config,
) -> None:
    await tenant_a.subscribe(receiver.url("all"))
    early = await tenant_a.subscribe(receiver.url("early"), "execution.running", "execution.queued")
    quiet, chatty, plain = history("execution.succeeded"), history("execution.*"), history()
    for event in [*quiet, *chatty, *plain]:
        await bus.publish(event)

    def got(path: str, events: Sequence[executions_pb2.WorkflowExecutionEvent]) -> list[str]:
        ids = {e.event_id for e in events}
        bodies = [json.loads(r.body) for r in receiver.at(path)]
        return sorted(b["type"] for b in bodies if b["data"]["eventId"] in ids)

    async def caught_up() -> None:
        assert got("all", plain) == sorted(TYPES)
        assert got("all", chatty) == sorted(TYPES)
        assert got("all", quiet) == ["execution.succeeded"]
        assert got("early", chatty) == ["execution.queued", "execution.running"]
        assert got("early", plain) == ["execution.queued", "execution.running"]
        info = await bus.js.consumer_info(
            webhook_config.nats.stream, webhook_config.consumer.durable_name
        )
        assert (info.num_pending, info.num_ack_pending) == (0, 0)

    await eventually(caught_up, timeout=15)
    # Every event became its deliveries, and those went out: nothing else is on its way.
    assert got("all", quiet) == ["execution.succeeded"]
    # That subscription wants no succeeded events, and the execution wants only those.
    assert got("early", quiet) == []
    made = {d.event_id for d in await tenant_a.deliveries(early.id)}
    assert made == {e.event_id for e in [*chatty, *plain] if e.event_type in TYPES[:2]}
