"""gRPC servicers: proto in, domain call, proto out. Errors are raised as
comfyfleet.common.errors types and turned into statuses by the shared interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TypeAlias

import asyncpg
import grpc

from comfyfleet.common.errors import FieldViolation, InvalidArgument
from comfyfleet.common.tenancy import max_concurrency_of, tenant_of
from comfyfleet.common.timeutil import to_timestamp
from comfyfleet.environments.v1 import environments_pb2, environments_pb2_grpc
from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from services.scheduler.breaker import Breakers, Scope, Snapshot
from services.scheduler.budgets import Budget, Budgets, check_budget_request
from services.scheduler.config import SchedulerSettings
from services.scheduler.environments import Environments, environment_proto
from services.scheduler.executions import Executions
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.lifecycle import State
from services.scheduler.queue import Queue, QueueStats
from services.scheduler.records import ExecutionView
from services.scheduler.scaling import DecisionRecord, recent_decisions
from services.scheduler.telemetry import BREAKER_STATES, split_name
from services.scheduler.uploads import Uploads, upload_proto
from services.scheduler.views import OutputLinks, execution_proto, executor_proto, state_of

Context: TypeAlias = grpc.aio.ServicerContext


def _require_id(value: str) -> str:
    if not value:
        raise InvalidArgument("an execution id is required", [FieldViolation("id", "required")])
    return value


def _state_filter(value: int) -> State | None:
    if value not in executions_pb2.ExecutionState.values():
        raise InvalidArgument("unknown state", [FieldViolation("state", "not an ExecutionState")])
    return state_of(value)


class ExecutionServicer(executions_pb2_grpc.ExecutionServiceServicer):
    """The internal ExecutionService the gateway calls with the caller's tenant."""

    def __init__(self, executions: Executions, links: OutputLinks, uploads: Uploads) -> None:
        self.executions = executions
        self.links = links
        self.uploads = uploads

    async def CreateExecution(
        self, request: executions_pb2.CreateExecutionRequest, context: Context
    ) -> executions_pb2.Execution:
        view = await self.executions.create(
            tenant_of(context), request, max_concurrency_of(context)
        )
        return execution_proto(view, self.links)

    async def GetExecution(
        self, request: executions_pb2.GetExecutionRequest, context: Context
    ) -> executions_pb2.Execution:
        view = await self.executions.get(tenant_of(context), _require_id(request.id))
        return execution_proto(view, self.links)

    async def ListExecutions(
        self, request: executions_pb2.ListExecutionsRequest, context: Context
    ) -> executions_pb2.ListExecutionsResponse:
        made: dict[str, executions_pb2.Execution] = {}

        def size_of(view: ExecutionView) -> int:
            made[view.record.id] = execution_proto(view, self.links)
            return made[view.record.id].ByteSize()

        page = await self.executions.page(
            tenant_of(context),
            page_size=request.page_size,
            page_token=request.page_token,
            state=_state_filter(request.state),
            labels=request.labels,
            size_of=size_of,
        )
        return executions_pb2.ListExecutionsResponse(
            executions=[made[v.record.id] for v in page.executions],
            next_page_token=page.next_page_token,
        )

    async def CancelExecution(
        self, request: executions_pb2.CancelExecutionRequest, context: Context
    ) -> executions_pb2.Execution:
        view = await self.executions.cancel(tenant_of(context), _require_id(request.id))
        return execution_proto(view, self.links)

    async def WatchExecution(
        self, request: executions_pb2.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[executions_pb2.WorkflowExecutionEvent]:
        tenant = tenant_of(context)
        async for event in self.executions.watch(
            tenant, _require_id(request.id), request.after_sequence
        ):
            yield event

    async def CreateInputUpload(
        self, request: executions_pb2.CreateInputUploadRequest, context: Context
    ) -> executions_pb2.InputUpload:
        return upload_proto(await self.uploads.create(tenant_of(context), request))


class EnvironmentServicer(environments_pb2_grpc.EnvironmentServiceServicer):
    """The EnvironmentService the gateway forwards to: every tenant reads environments; the
    gateway lets only admin keys create or delete them."""

    def __init__(self, environments: Environments) -> None:
        self.environments = environments

    async def GetEnvironment(
        self, request: environments_pb2.GetEnvironmentRequest, context: Context
    ) -> environments_pb2.Environment:
        return environment_proto(await self.environments.get(request.name))

    async def ListEnvironments(
        self, request: environments_pb2.ListEnvironmentsRequest, context: Context
    ) -> environments_pb2.ListEnvironmentsResponse:
        records, token = await self.environments.page(request.page_size, request.page_token)
        return environments_pb2.ListEnvironmentsResponse(
            environments=[environment_proto(r) for r in records], next_page_token=token
        )

    async def GetEnvironmentCatalog(
        self, request: environments_pb2.GetEnvironmentCatalogRequest, context: Context
    ) -> environments_pb2.EnvironmentCatalog:
        return await self.environments.catalog(request.name, request.view)

    async def CreateEnvironment(
        self, request: environments_pb2.CreateEnvironmentRequest, context: Context
    ) -> environments_pb2.Environment:
        record = await self.environments.create(request.environment, request.request_id)
        return environment_proto(record)

    async def DeleteEnvironment(
        self, request: environments_pb2.DeleteEnvironmentRequest, context: Context
    ) -> environments_pb2.DeleteEnvironmentResponse:
        await self.environments.delete(request.name)
        return environments_pb2.DeleteEnvironmentResponse()


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    """Executor registration, queue statistics and circuit breakers."""

    def __init__(
        self,
        registry: ExecutorRegistry,
        queue: Queue,
        settings: SchedulerSettings,
        breakers: Breakers,
        replica: str,
        budgets: Budgets,
        pool: asyncpg.Pool,
    ) -> None:
        self.registry = registry
        self.queue = queue
        self.settings = settings
        self.breakers = breakers
        self.replica = replica
        self.budgets = budgets
        self.pool = pool

    async def RegisterExecutor(
        self, request: scheduler_pb2.RegisterExecutorRequest, context: Context
    ) -> scheduler_pb2.RegisterExecutorResponse:
        await self.registry.register(
            request.executor,
            environment=request.environment if request.HasField("environment") else None,
            object_info_json=request.object_info_json,
        )
        return scheduler_pb2.RegisterExecutorResponse(
            heartbeat_interval_seconds=self.settings.heartbeat_interval_s
        )

    async def Heartbeat(
        self, request: scheduler_pb2.HeartbeatRequest, context: Context
    ) -> scheduler_pb2.HeartbeatResponse:
        if not request.executor_id:
            raise InvalidArgument(
                "an executor id is required", [FieldViolation("executor_id", "required")]
            )
        capacity = request.capacity if request.HasField("capacity") else None
        known = await self.registry.heartbeat(request.executor_id, capacity)
        return scheduler_pb2.HeartbeatResponse(reregister=not known)

    async def DeregisterExecutor(
        self, request: scheduler_pb2.DeregisterExecutorRequest, context: Context
    ) -> scheduler_pb2.DeregisterExecutorResponse:
        if not request.executor_id:
            raise InvalidArgument(
                "an executor id is required", [FieldViolation("executor_id", "required")]
            )
        await self.registry.deregister(request.executor_id)
        return scheduler_pb2.DeregisterExecutorResponse()

    async def ListExecutors(
        self, request: scheduler_pb2.ListExecutorsRequest, context: Context
    ) -> scheduler_pb2.ListExecutorsResponse:
        executors = await self.registry.live(self.settings.executor_lapse_s)
        return scheduler_pb2.ListExecutorsResponse(executors=[executor_proto(e) for e in executors])

    async def GetQueueStats(
        self, request: scheduler_pb2.GetQueueStatsRequest, context: Context
    ) -> scheduler_pb2.GetQueueStatsResponse:
        stats = await self.queue.stats(self.settings.executor_lapse_s)
        return scheduler_pb2.GetQueueStatsResponse(
            depth=stats.depth,
            oldest_wait_seconds=stats.oldest_wait_s,
            running=stats.running,
            slices=[
                scheduler_pb2.QueueStats(
                    priority=s.priority,
                    tenant=s.tenant,
                    provider=s.provider,
                    depth=s.depth,
                    oldest_wait_seconds=s.oldest_wait_s,
                    environment=s.environment,
                )
                for s in stats.slices
            ],
            providers=self._providers(stats),
            environments=[
                scheduler_pb2.EnvironmentStats(
                    environment=e.environment,
                    depth=e.depth,
                    oldest_wait_seconds=e.oldest_wait_s,
                    running=e.running,
                    executors=e.executors,
                    slots=e.slots,
                    busy_slots=e.busy_slots,
                )
                for e in stats.environments
            ],
        )

    def _providers(self, stats: QueueStats) -> list[scheduler_pb2.ProviderStats]:
        loads = {p.provider: p for p in stats.providers}
        guarded = {
            split_name(s.name)[1]: s.state
            for s in self.breakers.snapshots()
            if split_name(s.name)[0] == Scope.PROVIDER.value
        }
        out = []
        for name in sorted(set(loads) | set(guarded)):
            load = loads.get(name)
            state = guarded.get(name)
            out.append(
                scheduler_pb2.ProviderStats(
                    provider=name,
                    executors=load.executors if load else 0,
                    slots=load.slots if load else 0,
                    busy_slots=load.busy_slots if load else 0,
                    breaker_state=BREAKER_STATES[state]
                    if state
                    else scheduler_pb2.CIRCUIT_BREAKER_STATE_CLOSED,
                )
            )
        return out

    async def ListCircuitBreakers(
        self, request: scheduler_pb2.ListCircuitBreakersRequest, context: Context
    ) -> scheduler_pb2.ListCircuitBreakersResponse:
        snapshots = self.breakers.snapshots()
        # Providers first: they say the most about where work can go.
        snapshots.sort(key=lambda s: (split_name(s.name)[0] != Scope.PROVIDER.value, s.name))
        return scheduler_pb2.ListCircuitBreakersResponse(
            circuit_breakers=[breaker_proto(s) for s in snapshots], replica=self.replica
        )

    async def SetTenantBudget(
        self, request: scheduler_pb2.SetTenantBudgetRequest, context: Context
    ) -> scheduler_pb2.TenantBudget:
        return budget_proto(await self.budgets.set(request.tenant, request.limit_usd))

    async def GetTenantBudget(
        self, request: scheduler_pb2.GetTenantBudgetRequest, context: Context
    ) -> scheduler_pb2.TenantBudget:
        check_budget_request(request.tenant, 0.0)
        return budget_proto(await self.budgets.get(request.tenant))

    async def ListScalingDecisions(
        self, request: scheduler_pb2.ListScalingDecisionsRequest, context: Context
    ) -> scheduler_pb2.ListScalingDecisionsResponse:
        if request.page_size < 0:
            raise InvalidArgument(
                "page_size cannot be negative", [FieldViolation("page_size", "must be >= 0")]
            )
        limit = min(request.page_size or 50, 500)
        records = await recent_decisions(self.pool, request.provider, limit)
        return scheduler_pb2.ListScalingDecisionsResponse(
            decisions=[decision_proto(r) for r in records]
        )


def decision_proto(r: DecisionRecord) -> scheduler_pb2.ScalingDecision:
    return scheduler_pb2.ScalingDecision(
        provider=r.provider,
        current_replicas=r.current,
        desired_replicas=r.desired,
        reason=r.reason,
        applied=r.applied,
        note=r.note,
        decide_time=to_timestamp(r.decided_at),
        queue_depth=r.queue_depth,
        oldest_wait_seconds=r.oldest_wait_s,
        utilization=r.utilization,
    )


def budget_proto(budget: Budget) -> scheduler_pb2.TenantBudget:
    return scheduler_pb2.TenantBudget(
        tenant=budget.tenant,
        limit_usd=budget.limit_usd,
        spent_usd=budget.spent_usd,
        period_start_time=to_timestamp(budget.period_start),
        period_end_time=to_timestamp(budget.period_end),
    )


def breaker_proto(snap: Snapshot) -> scheduler_pb2.CircuitBreaker:
    scope, target = split_name(snap.name)
    return scheduler_pb2.CircuitBreaker(
        name=snap.name,
        scope=scope,
        target=target,
        state=BREAKER_STATES[snap.state],
        calls=snap.calls,
        failed_calls=snap.failures,
        slow_calls=snap.slow,
        failure_rate=snap.failure_rate,
        slow_call_rate=snap.slow_call_rate,
        state_change_time=to_timestamp(datetime.fromtimestamp(snap.since, UTC)),
        transitions=snap.transitions,
        rejected_calls=snap.rejected,
        calls_in_flight=snap.in_flight,
    )
