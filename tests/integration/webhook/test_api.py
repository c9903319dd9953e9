"""WebhookService over gRPC: validation, tenancy, paging, updates, rotation and replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from comfyfleet.common.events import EventBus
from comfyfleet.webhooks.v1 import webhooks_pb2
from services.webhook.server import WebhookService
from tests.integration.webhook.conftest import StartService
from tests.integration.webhook.support import (
    Client,
    Receiver,
    answers,
    execution_event,
    one,
    rpc_error,
    violated_fields,
)
from tests.support.eventually import eventually

pb = webhooks_pb2


def _create(url: str, *types: str, request_id: str = "") -> pb.CreateSubscriptionRequest:
    return pb.CreateSubscriptionRequest(
        subscription=pb.Subscription(url=url, event_types=types), request_id=request_id
    )


async def test_bad_subscriptions_are_refused_field_by_field(
    service: WebhookService, tenant_a: Client
) -> None:
    request = _create("ftp://x", "execution.succeeded", "execution.bogus")
    request.subscription.description = "d" * 2000
    err = await rpc_error(tenant_a.CreateSubscription(request))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(err) == [
        "subscription.url",
        "subscription.event_types[1]",
        "subscription.description",
    ]
    listed = await tenant_a.ListSubscriptions(pb.ListSubscriptionsRequest())
    assert isinstance(listed, pb.ListSubscriptionsResponse) and not listed.subscriptions


async def test_calls_without_a_tenant_are_unauthenticated(service: WebhookService) -> None:
    from comfyfleet.common.grpcserver import channel
    from comfyfleet.webhooks.v1 import webhooks_pb2_grpc

    async with channel(f"127.0.0.1:{service.port}") as ch:
        stub = webhooks_pb2_grpc.WebhookServiceStub(ch)
        err = await rpc_error(stub.ListSubscriptions(pb.ListSubscriptionsRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_create_returns_the_secret_once_and_is_idempotent(
    service: WebhookService, tenant_a: Client, receiver: Receiver
) -> None:
    request = _create(receiver.url("x"), "execution.*", request_id="req-1")
    first = await tenant_a.CreateSubscription(request)
    again = await tenant_a.CreateSubscription(request)
    assert isinstance(first, pb.Subscription) and isinstance(again, pb.Subscription)
    assert first.secret.startswith("whsec_") and first.enabled
    assert (again.id, again.secret) == (first.id, first.secret)
    got = await tenant_a.GetSubscription(pb.GetSubscriptionRequest(id=first.id))
    assert isinstance(got, pb.Subscription)
    assert got.secret == "" and got.url == first.url and list(got.event_types) == ["execution.*"]
    assert got.tenant == "tenant-a" and got.create_time == first.create_time


async def test_tenants_see_only_their_own_subscriptions(
    service: WebhookService,
    tenant_a: Client,
    tenant_b: Client,
    receiver: Receiver,
    bus: EventBus,
) -> None:
    mine = await tenant_a.subscribe(receiver.url("a"))
    theirs = await tenant_b.subscribe(receiver.url("b"))
    calls = [
        tenant_b.GetSubscription(pb.GetSubscriptionRequest(id=mine.id)),
        tenant_b.DeleteSubscription(pb.DeleteSubscriptionRequest(id=mine.id)),
        tenant_b.ListDeliveries(pb.ListDeliveriesRequest(subscription_id=mine.id)),
        tenant_b.PingSubscription(pb.PingSubscriptionRequest(id=mine.id)),
        tenant_b.RotateSubscriptionSecret(pb.RotateSubscriptionSecretRequest(id=mine.id)),
        tenant_b.UpdateSubscription(
            pb.UpdateSubscriptionRequest(subscription=pb.Subscription(id=mine.id, description="x"))
        ),
    ]
    for call in calls:
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
    listed = await tenant_b.ListSubscriptions(pb.ListSubscriptionsRequest())
    assert isinstance(listed, pb.ListSubscriptionsResponse)
    assert [s.id for s in listed.subscriptions] == [theirs.id]

    await bus.publish(execution_event("tenant-b"))

    async def b_got_it() -> None:
        assert len(receiver.at("b")) == 1

    await eventually(b_got_it)
    assert receiver.at("a") == []
    got = await tenant_a.GetSubscription(pb.GetSubscriptionRequest(id=mine.id))
    assert isinstance(got, pb.Subscription) and got.enabled


async def test_listing_pages_through_everything(
    service: WebhookService, tenant_a: Client, receiver: Receiver
) -> None:
    made = [(await tenant_a.subscribe(receiver.url(f"p{i}"))).id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await tenant_a.ListSubscriptions(
            pb.ListSubscriptionsRequest(page_size=2, page_token=token)
        )
        assert isinstance(page, pb.ListSubscriptionsResponse)
        assert len(page.subscriptions) <= 2
        seen += [s.id for s in page.subscriptions]
        token = page.next_page_token
        if not token:
            break
    assert seen == made
    err = await rpc_error(
        tenant_a.ListSubscriptions(pb.ListSubscriptionsRequest(page_token="bogus"))
    )
    assert violated_fields(err) == ["page_token"]


async def test_update_with_and_without_a_mask(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    sub = await tenant_a.subscribe(receiver.url("u1"), "execution.failed")
    changed = await tenant_a.UpdateSubscription(
        pb.UpdateSubscriptionRequest(
            subscription=pb.Subscription(
                id=sub.id, url=receiver.url("u2"), event_types=["execution.succeeded"]
            )
        )
    )
    assert isinstance(changed, pb.Subscription)
    assert changed.url == receiver.url("u2") and list(changed.event_types) == [
        "execution.succeeded"
    ]
    assert changed.secret == "" and changed.enabled
    err = await rpc_error(
        tenant_a.UpdateSubscription(
            pb.UpdateSubscriptionRequest(
                subscription=pb.Subscription(id=sub.id, url="not a url"),
                update_mask=field_mask_pb2.FieldMask(paths=["url"]),
            )
        )
    )
    assert violated_fields(err) == ["subscription.url"]

    await bus.publish(execution_event("tenant-a", "execution.succeeded"))

    async def went_to_the_new_url() -> None:
        assert len(receiver.at("u2")) == 1

    await eventually(went_to_the_new_url)
    off = await tenant_a.UpdateSubscription(
        pb.UpdateSubscriptionRequest(
            subscription=pb.Subscription(id=sub.id),
            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
        )
    )
    assert isinstance(off, pb.Subscription) and not off.enabled and off.disabled_reason == ""
    err = await rpc_error(tenant_a.PingSubscription(pb.PingSubscriptionRequest(id=sub.id)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_delete_drops_the_subscription_and_its_deliveries(
    service: WebhookService, tenant_a: Client, receiver: Receiver
) -> None:
    receiver.handlers["d"] = answers(then=500)
    sub = await tenant_a.subscribe(receiver.url("d"))
    await tenant_a.PingSubscription(pb.PingSubscriptionRequest(id=sub.id))

    async def tried() -> None:
        assert receiver.at("d")

    await eventually(tried)
    await tenant_a.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id))
    for call in (
        tenant_a.GetSubscription(pb.GetSubscriptionRequest(id=sub.id)),
        tenant_a.ListDeliveries(pb.ListDeliveriesRequest(subscription_id=sub.id)),
        tenant_a.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id)),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND


async def test_rotation_signs_with_both_secrets_during_the_overlap(
    service: WebhookService, tenant_a: Client, receiver: Receiver
) -> None:
    sub = await tenant_a.subscribe(receiver.url("r"))
    rotated = await tenant_a.RotateSubscriptionSecret(pb.RotateSubscriptionSecretRequest(id=sub.id))
    assert isinstance(rotated, pb.RotateSubscriptionSecretResponse)
    new = rotated.subscription.secret
    assert new.startswith("whsec_") and new != sub.secret
    ends = rotated.previous_secret_expire_time.ToDatetime(tzinfo=UTC)
    assert timedelta(minutes=59) < ends - datetime.now(UTC) <= timedelta(hours=1)

    await tenant_a.PingSubscription(pb.PingSubscriptionRequest(id=sub.id))

    async def pinged() -> None:
        assert len(receiver.at("r")) == 1

    await eventually(pinged)
    during = receiver.at("r")[0]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert during.verify(sub.secret)["type"] == "webhook.test"
    assert during.verify(new)["type"] == "webhook.test"

    # A rotation with no overlap ends every earlier secret at once.
    again = await tenant_a.RotateSubscriptionSecret(
        pb.RotateSubscriptionSecretRequest(id=sub.id, overlap=duration_pb2.Duration(seconds=0))
    )
    assert isinstance(again, pb.RotateSubscriptionSecretResponse)
    await tenant_a.PingSubscription(pb.PingSubscriptionRequest(id=sub.id))

    async def pinged_again() -> None:
        assert len(receiver.at("r")) == 2

    await eventually(pinged_again)
    after = receiver.at("r")[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    after.verify(again.subscription.secret)
    err = await rpc_error(
        tenant_a.RotateSubscriptionSecret(
            pb.RotateSubscriptionSecretRequest(id=sub.id, overlap=duration_pb2.Duration(seconds=-1))
        )
    )
    assert violated_fields(err) == ["overlap"]


async def test_ping_reaches_a_subscription_whatever_its_filter(
    service: WebhookService, tenant_a: Client, receiver: Receiver
) -> None:
    sub = await tenant_a.subscribe(receiver.url("ping"), "execution.failed")
    delivery = await tenant_a.PingSubscription(pb.PingSubscriptionRequest(id=sub.id))
    assert isinstance(delivery, pb.Delivery) and delivery.event_type == "webhook.test"

    async def delivered() -> None:
        got = await tenant_a.GetDelivery(
            pb.GetDeliveryRequest(subscription_id=sub.id, id=delivery.id)
        )
        assert isinstance(got, pb.Delivery) and got.state == pb.DELIVERY_STATE_SUCCEEDED

    await eventually(delivered)
    body = one(receiver.at("ping")).verify(sub.secret)
    assert body["data"] == {"subscriptionId": sub.id}


async def test_redeliver_and_recover_send_again_with_the_same_id(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    receiver.handlers["down"] = answers(*[503] * 8)  # every attempt of two deliveries fails
    sub = await tenant_a.subscribe(receiver.url("down"))
    since = timestamp_pb2.Timestamp()
    since.FromDatetime(datetime.now(UTC) - timedelta(seconds=1))
    events = [execution_event("tenant-a"), execution_event("tenant-a")]
    for event in events:
        await bus.publish(event)

    async def both_failed() -> list[pb.Delivery]:
        found = await tenant_a.deliveries(sub.id, state=pb.DELIVERY_STATE_FAILED)
        assert len(found) == 2
        return found

    failed = await eventually(both_failed)
    one_id = failed[0].id
    again = await tenant_a.RedeliverDelivery(
        pb.RedeliverDeliveryRequest(subscription_id=sub.id, id=one_id)
    )
    assert isinstance(again, pb.Delivery) and again.state == pb.DELIVERY_STATE_PENDING

    async def redelivered() -> None:
        got = await tenant_a.GetDelivery(pb.GetDeliveryRequest(subscription_id=sub.id, id=one_id))
        assert isinstance(got, pb.Delivery) and got.state == pb.DELIVERY_STATE_SUCCEEDED
        assert got.attempts == 5

    await eventually(redelivered)
    recovered = await tenant_a.RecoverDeliveries(
        pb.RecoverDeliveriesRequest(subscription_id=sub.id, since=since)
    )
    assert isinstance(recovered, pb.RecoverDeliveriesResponse) and recovered.recovered_count == 1

    async def all_succeeded() -> None:
        found = await tenant_a.deliveries(sub.id, state=pb.DELIVERY_STATE_SUCCEEDED)
        assert len(found) == 2

    await eventually(all_succeeded)
    by_id: dict[str, int] = {}
    for hit in receiver.at("down"):
        by_id[hit.webhook_id] = by_id.get(hit.webhook_id, 0) + 1
    assert sorted(by_id.values()) == [5, 5]  # 4 failed attempts, then one more each
    assert set(by_id) == {d.id for d in failed}
    err = await rpc_error(
        tenant_a.RecoverDeliveries(pb.RecoverDeliveriesRequest(subscription_id=sub.id))
    )
    assert violated_fields(err) == ["since"]
    missing = await rpc_error(
        tenant_a.RedeliverDelivery(pb.RedeliverDeliveryRequest(subscription_id=sub.id, id="msg_x"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_deliveries_filter_by_state_and_event(
    service: WebhookService, tenant_a: Client, receiver: Receiver, bus: EventBus
) -> None:
    sub = await tenant_a.subscribe(receiver.url("f"))
    events = [execution_event("tenant-a") for _ in range(3)]
    for event in events:
        await bus.publish(event)

    async def all_done() -> list[pb.Delivery]:
        found = await tenant_a.deliveries(sub.id, state=pb.DELIVERY_STATE_SUCCEEDED)
        assert len(found) == 3
        return found

    done = await eventually(all_done)
    assert [d.id for d in done] == sorted((d.id for d in done), reverse=True)  # newest first
    assert await tenant_a.deliveries(sub.id, state=pb.DELIVERY_STATE_FAILED) == []
    only = one(await tenant_a.deliveries(sub.id, event_id=events[1].event_id))
    assert only.event_id == events[1].event_id
    first = await tenant_a.ListDeliveries(
        pb.ListDeliveriesRequest(subscription_id=sub.id, page_size=2)
    )
    assert isinstance(first, pb.ListDeliveriesResponse) and len(first.deliveries) == 2
    rest = await tenant_a.ListDeliveries(
        pb.ListDeliveriesRequest(
            subscription_id=sub.id, page_size=2, page_token=first.next_page_token
        )
    )
    assert isinstance(rest, pb.ListDeliveriesResponse) and len(rest.deliveries) == 1
    assert not rest.next_page_token
    err = await rpc_error(
        tenant_a.ListDeliveries(
            pb.ListDeliveriesRequest(
                subscription_id=sub.id, page_token=first.next_page_token, event_id="evt_other"
            )
        )
    )
    assert violated_fields(err) == ["page_token"]


async def test_continuous_failure_disables_and_announces(
    start_service: StartService, receiver: Receiver, bus: EventBus
) -> None:
    from comfyfleet.common.grpcserver import channel
    from comfyfleet.webhooks.v1 import webhooks_pb2_grpc

    receiver.handlers["sick"] = answers(then=500)
    async with (
        start_service(disable_after_s=0.5, retry_schedule_s=(0.1,) * 20) as svc,
        channel(f"127.0.0.1:{svc.port}") as ch,
    ):
        client = Client(webhooks_pb2_grpc.WebhookServiceStub(ch), "tenant-a")
        sick = await client.subscribe(receiver.url("sick"))
        watcher = await client.subscribe(receiver.url("watcher"), "webhook.subscription_disabled")
        await bus.publish(execution_event("tenant-a"))

        async def disabled() -> None:
            got = await client.GetSubscription(pb.GetSubscriptionRequest(id=sick.id))
            assert isinstance(got, pb.Subscription) and not got.enabled
            assert "kept failing" in got.disabled_reason

        await eventually(disabled)
        delivery = one(await client.deliveries(sick.id))
        assert delivery.state == pb.DELIVERY_STATE_FAILED
        assert "disabled" in delivery.last_error

        async def announced() -> None:
            assert len(receiver.at("watcher")) == 1

        await eventually(announced)
        notice = receiver.at("watcher")[0].verify(watcher.secret)
        assert notice["type"] == "webhook.subscription_disabled"
        # 0.5 s of failures at 0.1 s spacing: a handful of attempts, not the 21 allowed.
        assert 3 <= len(receiver.at("sick")) < 15
