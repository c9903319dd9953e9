"""A recording webhook receiver, event factories and a tenant-scoped client for the tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from aiohttp import web
from grpc_status import rpc_status
from standardwebhooks.webhooks import Webhook

from comfyfleet.common.errors import field_violations
from comfyfleet.common.ids import new_id
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> dict[str, object]:
        """The body, after the standardwebhooks library checked its signature."""
        result = Webhook(secret).verify(self.body, self.headers)
        assert isinstance(result, dict)
        return result


Handler = Callable[[Received, int], Awaitable[web.StreamResponse]]


async def ok(_: Received, __: int) -> web.StreamResponse:
    return web.Response(status=204)


def answers(*statuses: int, then: int = 200) -> Handler:
    """Answers with ``statuses`` in turn, then with ``then`` forever."""

    async def handle(_: Received, n: int) -> web.StreamResponse:
        return web.Response(status=statuses[n - 1] if n <= len(statuses) else then, text="hi")

    return handle


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every request; each path answers as its
    handler says (204 by default)."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == f"/{path}"]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        got = Received(request.path, dict(request.headers), await request.read(), time.monotonic())
        self.received.append(got)
        handler = self.handlers.get(request.path.lstrip("/"), ok)
        return await handler(got, len(self.at(request.path.lstrip("/"))))

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def execution_event(
    tenant: str, event_type: str = "execution.succeeded", execution_id: str = ""
) -> executions_pb2.WorkflowExecutionEvent:
    event = executions_pb2.WorkflowExecutionEvent(
        event_id=new_id("evt"),
        execution_id=execution_id or new_id("exe"),
        event_type=event_type,
        tenant=tenant,
        sequence=1,
    )
    event.timestamp.FromDatetime(datetime.now(UTC))
    return event


class Client:
    """The webhook service as the gateway calls it, for one tenant."""

    def __init__(self, stub: webhooks_pb2_grpc.WebhookServiceStub, tenant: str) -> None:
        self.stub = stub
        self.tenant = tenant

    def __getattr__(self, method: str) -> Callable[..., Awaitable[object]]:
        call = getattr(self.stub, method)

        async def invoke(request: object) -> object:
            return await call(request, metadata=tenant_metadata(self.tenant), timeout=10)

        return invoke

    async def subscribe(
        self, url: str, *event_types: str, description: str = ""
    ) -> webhooks_pb2.Subscription:
        request = webhooks_pb2.CreateSubscriptionRequest(
            subscription=webhooks_pb2.Subscription(
                url=url, event_types=event_types, description=description
            )
        )
        created = await self.CreateSubscription(request)
        assert isinstance(created, webhooks_pb2.Subscription)
        return created

    async def deliveries(
        self, subscription_id: str, **filters: object
    ) -> list[webhooks_pb2.Delivery]:
        request = webhooks_pb2.ListDeliveriesRequest(
            subscription_id=subscription_id,
            page_size=1000,
            **filters,  # type: ignore[arg-type]
        )
        found = await self.ListDeliveries(request)
        assert isinstance(found, webhooks_pb2.ListDeliveriesResponse)
        return list(found.deliveries)

    async def attempts(
        self, subscription_id: str, delivery_id: str
    ) -> list[webhooks_pb2.DeliveryAttempt]:
        request = webhooks_pb2.ListDeliveryAttemptsRequest(
            subscription_id=subscription_id, delivery_id=delivery_id
        )
        found = await self.ListDeliveryAttempts(request)
        assert isinstance(found, webhooks_pb2.ListDeliveryAttemptsResponse)
        return list(found.attempts)


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error a call fails with; fails the test if it succeeds."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError("the call succeeded")


def violated_fields(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    return [v.field for v in field_violations(status)]


def one(items: list[T]) -> T:
    """The single item of ``items``; an AssertionError (so ``eventually`` retries) otherwise."""
    assert len(items) == 1, f"expected one item, got {len(items)}"
    return items[0]
