"""``comfyfleet.webhooks.v1.WebhookService`` for the gateway: proto in, domain calls, proto out.

The tenant comes from the gateway's ``x-comfyfleet-tenant`` metadata; every call is scoped
to it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.common.tenancy import tenant_of
from comfyfleet.common.timeutil import from_timestamp, to_timestamp
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from services.webhook.deliveries import Attempt, Deliveries, Delivery
from services.webhook.subscriptions import (
    MUTABLE_FIELDS,
    Subscription,
    SubscriptionFields,
    Subscriptions,
)

Context: TypeAlias = grpc.aio.ServicerContext
pb = webhooks_pb2

_STATE_TO_PROTO = {
    "pending": pb.DELIVERY_STATE_PENDING,
    "succeeded": pb.DELIVERY_STATE_SUCCEEDED,
    "failed": pb.DELIVERY_STATE_FAILED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}


def subscription_message(sub: Subscription) -> pb.Subscription:
    return pb.Subscription(
        id=sub.id,
        tenant=sub.tenant,
        url=sub.url,
        event_types=sub.event_types,
        description=sub.description,
        enabled=sub.enabled,
        secret=sub.secret,
        create_time=to_timestamp(sub.create_time),
        disabled_reason=sub.disabled_reason,
        update_time=to_timestamp(sub.update_time),
    )


def delivery_message(d: Delivery) -> pb.Delivery:
    return pb.Delivery(
        id=d.id,
        subscription_id=d.subscription_id,
        event_id=d.event_id,
        event_type=d.event_type,
        state=_STATE_TO_PROTO[d.state],
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        next_attempt_time=to_timestamp(d.next_attempt_time if d.state == "pending" else None),
        create_time=to_timestamp(d.create_time),
        payload=d.payload,
    )


def attempt_message(a: Attempt) -> pb.DeliveryAttempt:
    message = pb.DeliveryAttempt(
        number=a.number,
        attempt_time=to_timestamp(a.attempt_time),
        status_code=a.status_code,
        response_excerpt=a.response_excerpt,
        error=a.error,
    )
    message.latency.FromNanoseconds(round(a.latency_s * 1e9))
    return message


def _required(**values: str) -> None:
    missing = [FieldViolation(name, "required") for name, value in values.items() if not value]
    if missing:
        raise InvalidArgument("required fields are missing", missing)


def update_changes(request: pb.UpdateSubscriptionRequest) -> dict[str, Any]:
    """The fields an update changes: those in the mask, or (AIP-134) every non-default one."""
    sub = request.subscription
    values: dict[str, Any] = {
        "url": sub.url,
        "event_types": tuple(sub.event_types),
        "description": sub.description,
        "enabled": sub.enabled,
    }
    paths = list(request.update_mask.paths)
    unknown = [
        FieldViolation(f"update_mask.paths[{i}]", f"not one of {', '.join(MUTABLE_FIELDS)}")
        for i, p in enumerate(paths)
        if p not in MUTABLE_FIELDS
    ]
    if unknown:
        raise InvalidArgument("the update mask names fields that cannot change", unknown)
    if not paths:
        paths = [name for name, value in values.items() if value]
    return {name: values[name] for name in paths}


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, subscriptions: Subscriptions, deliveries: Deliveries) -> None:
        self.subscriptions = subscriptions
        self.deliveries = deliveries

    async def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: Context
    ) -> pb.Subscription:
        tenant = tenant_of(context)
        sub = request.subscription
        fields = SubscriptionFields(sub.url, tuple(sub.event_types), sub.description)
        created = await self.subscriptions.create(tenant, fields, request.request_id)
        return subscription_message(created)

    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: Context
    ) -> pb.Subscription:
        tenant = tenant_of(context)
        _required(id=request.id)
        return subscription_message(await self.subscriptions.get(tenant, request.id))

    async def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: Context
    ) -> pb.ListSubscriptionsResponse:
        tenant = tenant_of(context)
        subs, token = await self.subscriptions.list_page(
            tenant, request.page_size, request.page_token
        )
        return pb.ListSubscriptionsResponse(
            subscriptions=[subscription_message(s) for s in subs], next_page_token=token
        )

    async def UpdateSubscription(
        self, request: pb.UpdateSubscriptionRequest, context: Context
    ) -> pb.Subscription:
        tenant = tenant_of(context)
        _required(**{"subscription.id": request.subscription.id})
        changes = update_changes(request)
        updated = await self.subscriptions.update(tenant, request.subscription.id, changes)
        return subscription_message(updated)

    async def RotateSubscriptionSecret(
        self, request: pb.RotateSubscriptionSecretRequest, context: Context
    ) -> pb.RotateSubscriptionSecretResponse:
        tenant = tenant_of(context)
        _required(id=request.id)
        overlap = request.overlap.ToNanoseconds() / 1e9 if request.HasField("overlap") else None
        sub, ends = await self.subscriptions.rotate_secret(tenant, request.id, overlap)
        return pb.RotateSubscriptionSecretResponse(
            subscription=subscription_message(sub), previous_secret_expire_time=to_timestamp(ends)
        )

    async def PingSubscription(
        self, request: pb.PingSubscriptionRequest, context: Context
    ) -> pb.Delivery:
        tenant = tenant_of(context)
        _required(id=request.id)
        return delivery_message(await self.deliveries.ping(tenant, request.id))

    async def DeleteSubscription(
        self, request: pb.DeleteSubscriptionRequest, context: Context
    ) -> pb.DeleteSubscriptionResponse:
        tenant = tenant_of(context)
        _required(id=request.id)
        await self.subscriptions.delete(tenant, request.id)
        return pb.DeleteSubscriptionResponse()

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Context
    ) -> pb.ListDeliveriesResponse:
        tenant = tenant_of(context)
        _required(subscription_id=request.subscription_id)
        found, token = await self.deliveries.list_page(
            tenant,
            request.subscription_id,
            page_size=request.page_size,
            page_token=request.page_token,
            state=_STATE_FROM_PROTO.get(request.state),
            event_id=request.event_id,
        )
        return pb.ListDeliveriesResponse(
            deliveries=[delivery_message(d) for d in found], next_page_token=token
        )

    async def GetDelivery(self, request: pb.GetDeliveryRequest, context: Context) -> pb.Delivery:
        tenant = tenant_of(context)
        _required(subscription_id=request.subscription_id, id=request.id)
        found = await self.deliveries.get(tenant, request.subscription_id, request.id)
        return delivery_message(found)

    async def ListDeliveryAttempts(
        self, request: pb.ListDeliveryAttemptsRequest, context: Context
    ) -> pb.ListDeliveryAttemptsResponse:
        tenant = tenant_of(context)
        _required(subscription_id=request.subscription_id, delivery_id=request.delivery_id)
        found, token = await self.deliveries.attempts(
            tenant,
            request.subscription_id,
            request.delivery_id,
            request.page_size,
            request.page_token,
        )
        return pb.ListDeliveryAttemptsResponse(
            attempts=[attempt_message(a) for a in found], next_page_token=token
        )

    async def RedeliverDelivery(
        self, request: pb.RedeliverDeliveryRequest, context: Context
    ) -> pb.Delivery:
        tenant = tenant_of(context)
        _required(subscription_id=request.subscription_id, id=request.id)
        found = await self.deliveries.redeliver(tenant, request.subscription_id, request.id)
        return delivery_message(found)

    async def RecoverDeliveries(
        self, request: pb.RecoverDeliveriesRequest, context: Context
    ) -> pb.RecoverDeliveriesResponse:
        tenant = tenant_of(context)
        _required(subscription_id=request.subscription_id)
        if not request.HasField("since"):
            raise InvalidArgument("since is required", [FieldViolation("since", "required")])
        count = await self.deliveries.recover(
            tenant, request.subscription_id, from_timestamp(request.since)
        )
        return pb.RecoverDeliveriesResponse(recovered_count=count)
