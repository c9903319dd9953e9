"""The operations overview: what the whole platform does now, read from the internal services.

Each part comes from its own internal call, all at once. A part whose source fails (or does
not implement the call yet) is named in ``unavailable`` and the rest still shows: a dashboard
that goes blank when one service hiccups is of no use while operating it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.common.timeutil import to_timestamp
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.operations.v1 import operations_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc

# The overview covers this many tenants, by name; it is a dashboard, not a report.
MAX_TENANTS = 100
RECENT_DELIVERIES = 50
ACTIVE_PAGE = 50
CALL_TIMEOUT_S = 3.0
ACTIVE_STATES = (
    executions_pb2.EXECUTION_STATE_DISPATCHED,
    executions_pb2.EXECUTION_STATE_RUNNING,
)
DELIVERY = webhooks_pb2.DeliveryState
Fill = Callable[[operations_pb2.Overview], None]


@dataclass(frozen=True)
class Peers:
    """The internal services the overview is read from."""

    scheduler: scheduler_pb2_grpc.SchedulerServiceStub
    executions: executions_pb2_grpc.ExecutionServiceStub
    webhooks: webhooks_pb2_grpc.WebhookServiceStub


class OperationsReader:
    """Puts the overview together; ``tenants`` lists the tenants to cover, name by id."""

    def __init__(self, peers: Peers, tenants: Callable[[int], Awaitable[dict[str, str]]]) -> None:
        self.peers = peers
        self.tenants = tenants

    async def overview(self) -> operations_pb2.Overview:
        names = await self.tenants(MAX_TENANTS)
        tenants = list(names)
        parts: dict[str, Coroutine[Any, Any, Fill]] = {
            "queue": self._queue(),
            "active_executions": self._active(tenants),
            "executors": self._executors(),
            "circuit_breakers": self._breakers(),
            "scaling_decisions": self._scaling(),
            "webhooks": self._webhooks(tenants),
            "tenant_costs": self._costs(tenants),
        }
        results = await asyncio.gather(*parts.values(), return_exceptions=True)
        overview = operations_pb2.Overview(
            read_time=to_timestamp(datetime.now(UTC)), tenant_names=names
        )
        for part, result in zip(parts, results, strict=True):
            if isinstance(result, grpc.aio.AioRpcError):
                overview.unavailable.add(part=part, reason=reason_of(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                result(overview)
        return overview

    async def _queue(self) -> Fill:
        stats = await self.peers.scheduler.GetQueueStats(
            scheduler_pb2.GetQueueStatsRequest(), timeout=CALL_TIMEOUT_S
        )
        return lambda o: o.queue.CopyFrom(stats)

    async def _executors(self) -> Fill:
        found = await self.peers.scheduler.ListExecutors(
            scheduler_pb2.ListExecutorsRequest(), timeout=CALL_TIMEOUT_S
        )
        return lambda o: o.executors.extend(found.executors)

    async def _breakers(self) -> Fill:
        found = await self.peers.scheduler.ListCircuitBreakers(
            scheduler_pb2.ListCircuitBreakersRequest(), timeout=CALL_TIMEOUT_S
        )
        return lambda o: o.circuit_breakers.extend(found.circuit_breakers)

    async def _scaling(self) -> Fill:
        found = await self.peers.scheduler.ListScalingDecisions(
            scheduler_pb2.ListScalingDecisionsRequest(page_size=20), timeout=CALL_TIMEOUT_S
        )
        return lambda o: o.scaling_decisions.extend(found.decisions)

    async def _active(self, tenants: list[str]) -> Fill:
        pages = await asyncio.gather(
            *(self._active_of(t, s) for t in tenants for s in ACTIVE_STATES)
        )
        found = [e for page in pages for e in page]
        for e in found:
            # Workflows can be large and the dashboard never shows them.
            e.ClearField("workflow")
        found.sort(key=lambda e: e.create_time.ToNanoseconds(), reverse=True)
        return lambda o: o.active_executions.extend(found)

    async def _active_of(self, tenant: str, state: int) -> list[executions_pb2.Execution]:
        page = await self.peers.executions.ListExecutions(
            executions_pb2.ListExecutionsRequest(page_size=ACTIVE_PAGE, state=state),  # type: ignore[arg-type]
            metadata=tenant_metadata(tenant),
            timeout=CALL_TIMEOUT_S,
        )
        return list(page.executions)

    async def _costs(self, tenants: list[str]) -> Fill:
        budgets = await asyncio.gather(
            *(
                self.peers.scheduler.GetTenantBudget(
                    scheduler_pb2.GetTenantBudgetRequest(tenant=t), timeout=CALL_TIMEOUT_S
                )
                for t in tenants
            )
        )
        ranked = sorted(budgets, key=lambda b: b.spent_usd, reverse=True)
        return lambda o: o.tenant_costs.extend(ranked)

    async def _webhooks(self, tenants: list[str]) -> Fill:
        per_tenant = await asyncio.gather(*(self._webhooks_of(t) for t in tenants))
        found = [s for summaries in per_tenant for s in summaries]
        return lambda o: o.webhooks.extend(found)

    async def _webhooks_of(self, tenant: str) -> list[operations_pb2.WebhookSummary]:
        listed = await self.peers.webhooks.ListSubscriptions(
            webhooks_pb2.ListSubscriptionsRequest(page_size=50),
            metadata=tenant_metadata(tenant),
            timeout=CALL_TIMEOUT_S,
        )
        return list(await asyncio.gather(*(self._summary(tenant, s) for s in listed.subscriptions)))

    async def _summary(
        self, tenant: str, sub: webhooks_pb2.Subscription
    ) -> operations_pb2.WebhookSummary:
        page = await self.peers.webhooks.ListDeliveries(
            webhooks_pb2.ListDeliveriesRequest(subscription_id=sub.id, page_size=RECENT_DELIVERIES),
            metadata=tenant_metadata(tenant),
            timeout=CALL_TIMEOUT_S,
        )
        return summarize(tenant, sub, list(page.deliveries))


def summarize(
    tenant: str, sub: webhooks_pb2.Subscription, deliveries: list[webhooks_pb2.Delivery]
) -> operations_pb2.WebhookSummary:
    """Counts a subscription's recent deliveries (newest first) by state."""
    states = [d.state for d in deliveries]
    troubled = [d for d in deliveries if d.last_error or d.state == DELIVERY.DELIVERY_STATE_FAILED]
    return operations_pb2.WebhookSummary(
        tenant=tenant,
        subscription_id=sub.id,
        url=sub.url,
        enabled=sub.enabled,
        recent_deliveries=len(deliveries),
        succeeded=states.count(DELIVERY.DELIVERY_STATE_SUCCEEDED),
        failed=states.count(DELIVERY.DELIVERY_STATE_FAILED),
        pending=states.count(DELIVERY.DELIVERY_STATE_PENDING),
        last_error=troubled[0].last_error if troubled else "",
    )


def reason_of(err: grpc.aio.AioRpcError) -> str:
    if err.code() == grpc.StatusCode.UNIMPLEMENTED:
        return f"not implemented by its service yet ({err.details()})"
    return f"{err.code().name}: {err.details()}"
