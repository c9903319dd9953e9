"""Events from JetStream reach receivers signed, once per matching subscription, with retries."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from aiohttp import web

from comfyfleet.common.addresses import AddressPolicy
from comfyfleet.common.events import EventBus
from comfyfleet.common.grpcserver import channel
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from services.webhook.config import Config
from services.webhook.server import WebhookService
from tests.integration.webhook.conftest import StartService
from tests.integration.webhook.support import (
    Client,
    Received,
    Receiver,
    answers,
    execution_event,
    one,
)
from tests.support.eventually import eventually

pb = webhooks_pb2


async def test_events_reach_the_receiver_signed(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    only_done = await tenant_a.subscribe(receiver.url("done"), "execution.succeeded")
    everything = await tenant_a.subscribe(receiver.url("all"))
    running = execution_event("tenant-a", "execution.running")
    done = execution_event("tenant-a", "execution.succeeded", running.execution_id)
    await bus.publish(running)
    await bus.publish(done)

    async def both_arrived() -> None:
        assert len(receiver.at("done")) == 1 and len(receiver.at("all")) == 2

    await eventually(both_arrived)
    got = receiver.at("done")[0]
    body = got.verify(only_done.secret)
    assert body["type"] == "execution.succeeded"
    data = body["data"]
    assert isinstance(data, dict) and data["eventId"] == done.event_id
    assert data["executionId"] == done.execution_id and data["tenant"] == "tenant-a"
    assert body["timestamp"] == done.timestamp.ToJsonString()
    assert got.headers["Content-Type"] == "application/json"
    assert got.webhook_id.startswith("msg_")
    types = sorted(r.verify(everything.secret)["type"] for r in receiver.at("all"))  # type: ignore[type-var]
    assert types == ["execution.running", "execution.succeeded"]

    async def recorded() -> list[pb.Delivery]:
        found = await tenant_a.deliveries(only_done.id)
        assert [d.state for d in found] == [pb.DELIVERY_STATE_SUCCEEDED]
        return found

    (delivery,) = await eventually(recorded)
    assert delivery.id == got.webhook_id and delivery.event_id == done.event_id
    assert delivery.attempts == 1 and delivery.last_status_code == 204
    assert json.loads(delivery.payload) == json.loads(got.body)
    (attempt,) = await tenant_a.attempts(only_done.id, delivery.id)
    assert attempt.number == 1 and attempt.status_code == 204 and not attempt.error


async def test_retries_after_500s_and_timeouts_keep_the_webhook_id(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    async def flaky(got: Received, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=500, text="boom")
        if n == 2:
            await asyncio.sleep(3)  # past the 1 s request timeout
        if n == 3:
            return web.Response(status=302, headers={"Location": "http://127.0.0.1:1/"})
        return web.Response(status=200)

    receiver.handlers["flaky"] = flaky
    sub = await tenant_a.subscribe(receiver.url("flaky"))
    await bus.publish(execution_event("tenant-a"))

    async def succeeded() -> pb.Delivery:
        found = one(await tenant_a.deliveries(sub.id))
        assert found.state == pb.DELIVERY_STATE_SUCCEEDED
        return found

    delivery = await eventually(succeeded)
    hits = receiver.at("flaky")
    assert len(hits) == 4
    assert {h.webhook_id for h in hits} == {delivery.id}
    for hit in hits:
        hit.verify(sub.secret)
    attempts = await tenant_a.attempts(sub.id, delivery.id)
    assert [a.number for a in attempts] == [1, 2, 3, 4]
    assert [a.status_code for a in attempts] == [500, 0, 302, 200]
    assert attempts[0].response_excerpt == "boom"
    assert attempts[1].error == "timed out"
    assert delivery.attempts == 4


async def test_refused_connections_retry_then_fail(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    closed = Receiver()
    await closed.start()
    url = closed.url("hook")
    await closed.stop()  # nothing listens there any more
    sub = await tenant_a.subscribe(url)
    await bus.publish(execution_event("tenant-a"))

    async def failed() -> pb.Delivery:
        found = one(await tenant_a.deliveries(sub.id))
        assert found.state == pb.DELIVERY_STATE_FAILED
        return found

    delivery = await eventually(failed)
    attempts = await tenant_a.attempts(sub.id, delivery.id)
    assert len(attempts) == 4  # the first and three retries (the test schedule's length)
    assert all(a.status_code == 0 and "connect" in a.error.lower() for a in attempts)
    assert delivery.last_status_code == 0 and delivery.last_error


async def test_retry_after_is_honoured(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    async def busy(got: Received, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(status=200)

    receiver.handlers["busy"] = busy
    await tenant_a.subscribe(receiver.url("busy"))
    await bus.publish(execution_event("tenant-a"))

    async def twice() -> None:
        assert len(receiver.at("busy")) == 2

    await eventually(twice)
    first, second = receiver.at("busy")
    assert second.at - first.at >= 0.95  # the schedule alone would retry after 0.05 s


async def test_410_disables_the_subscription_and_tells_the_others(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    receiver.handlers["gone"] = answers(410)
    gone = await tenant_a.subscribe(receiver.url("gone"), "execution.*")
    watcher = await tenant_a.subscribe(receiver.url("watch"), "webhook.*")
    await bus.publish(execution_event("tenant-a"))

    async def told() -> None:
        assert len(receiver.at("watch")) == 1

    await eventually(told)
    notice = receiver.at("watch")[0].verify(watcher.secret)
    assert notice["type"] == "webhook.subscription_disabled"
    assert notice["data"] == {
        "subscriptionId": gone.id,
        "url": gone.url,
        "reason": "the receiver answered 410 Gone",
    }
    current = await tenant_a.GetSubscription(pb.GetSubscriptionRequest(id=gone.id))
    assert isinstance(current, pb.Subscription)
    assert not current.enabled and "410" in current.disabled_reason
    (delivery,) = await tenant_a.deliveries(gone.id)
    assert delivery.state == pb.DELIVERY_STATE_FAILED and delivery.last_status_code == 410

    await bus.publish(execution_event("tenant-a"))
    await tenant_a.subscribe(receiver.url("marker"))
    await bus.publish(execution_event("tenant-a"))

    async def later_events_processed() -> None:
        assert len(receiver.at("marker")) == 1

    await eventually(later_events_processed)
    assert len(receiver.at("gone")) == 1
    assert len(await tenant_a.deliveries(gone.id)) == 1


async def test_redelivered_events_make_no_second_delivery(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    sub = await tenant_a.subscribe(receiver.url("once"))
    event = execution_event("tenant-a")
    # The same event twice on the stream, as a relay re-sending after the duplicate window.
    for copy in range(2):
        await bus.js.publish(
            bus.subject(event.tenant, event.execution_id),
            event.SerializeToString(),
            headers={"Nats-Msg-Id": f"{event.event_id}-{copy}"},
        )
    marker = execution_event("tenant-a")
    await bus.publish(marker)

    async def marker_arrived() -> None:
        assert len(await tenant_a.deliveries(sub.id, event_id=marker.event_id)) == 1
        assert len(receiver.at("once")) == 2

    await eventually(marker_arrived)
    found = await tenant_a.deliveries(sub.id, event_id=event.event_id)
    assert len(found) == 1
    assert [r.webhook_id for r in receiver.at("once")].count(found[0].id) == 1


async def test_a_failing_receiver_does_not_slow_healthy_ones(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    async def hang(got: Received, n: int) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(status=200)

    receiver.handlers["slow"] = hang
    await tenant_a.subscribe(receiver.url("slow"))
    await tenant_a.subscribe(receiver.url("fast"))
    events = [execution_event("tenant-a") for _ in range(40)]
    for event in events:
        await bus.publish(event)

    async def fast_has_all() -> None:
        assert len(receiver.at("fast")) == len(events)

    # 40 hung attempts of 1 s at 8 at a time would take 5 s if they held up the others.
    await eventually(fast_has_all, timeout=4.0)
    # 8 at first; once attempts fail, 2 at a time (and each retry waits its turn).
    assert len(receiver.at("slow")) <= 8 + 2 * 4


async def test_hosts_resolving_to_forbidden_addresses_are_refused_at_connect(
    start_service: StartService, receiver: Receiver, bus: EventBus
) -> None:
    strict = AddressPolicy(allow_loopback=False)
    async with start_service(addresses=strict) as svc, channel(f"127.0.0.1:{svc.port}") as ch:
        client = Client(webhooks_pb2_grpc.WebhookServiceStub(ch), "tenant-a")
        # A name, so creation cannot know where it points; the connection finds out.
        sub = await client.subscribe(f"http://localhost:{receiver.port}/private")
        await bus.publish(execution_event("tenant-a"))

        async def refused() -> None:
            delivery = one(await client.deliveries(sub.id))
            attempts = await client.attempts(sub.id, delivery.id)
            assert attempts and "loopback address" in attempts[0].error

        await eventually(refused)
    assert receiver.at("private") == []


async def test_database_connections_lost_mid_work_lose_no_event(
    service: WebhookService,
    tenant_a: Client,
    receiver: Receiver,
    bus: EventBus,
    webhook_config: Config,
) -> None:
    receiver.handlers["flaky"] = answers(500, 500, then=200)
    sub = await tenant_a.subscribe(receiver.url("flaky"))
    await bus.publish(execution_event("tenant-a"))

    async def first_tried() -> None:
        assert receiver.at("flaky")

    await eventually(first_tried)
    # Every connection of the service dies, as in a database restart.
    conn = await asyncpg.connect(webhook_config.database.url)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    later = execution_event("tenant-a")
    await bus.publish(later)

    async def both_delivered() -> None:
        found = await tenant_a.deliveries(sub.id, state=pb.DELIVERY_STATE_SUCCEEDED)
        assert len(found) == 2

    await eventually(both_delivered, timeout=20.0)
    assert later.event_id in {json.loads(r.body)["data"]["eventId"] for r in receiver.at("flaky")}
