"""What executions cost: every attempt's GPU time at its provider's price with the
provider's billing rounding, on the execution and on every event; tenant budgets."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from comfyfleet.common.errors import from_rpc_error
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.cost import Billing, PriceTable, ProviderPrices
from tests.integration.scheduler.conftest import Clients, StartScheduler, clients_of
from tests.integration.scheduler.helpers import STATE, create, wait_for_state, watch
from tests.integration.scheduler.scripted_executor import fail, scripted_executor, succeed

TENANT = "acme"
PNG = b"\x89PNG"
# One cent per started minute on ECS (so a test's runs cost the same on a slow machine), ten
# minutes at least on "verda"; the local pool is free.
PRICES = PriceTable(
    {
        "ecs": ProviderPrices({"*": 0.6}, Billing(increment_s=60)),
        "verda": ProviderPrices({"*": 36.0}, Billing(minimum_s=600)),
        "local": ProviderPrices({"*": 0.0}),
    }
)


async def test_every_execution_and_event_carries_the_cost_so_far(
    start_scheduler: StartScheduler,
) -> None:
    async with (
        start_scheduler(prices=PRICES) as running,
        clients_of(running) as clients,
        scripted_executor(
            clients.address,
            "ecs-1",
            fail(retryable=True),
            succeed(("2", "a.png", PNG)),
            provider="ecs",
        ),
    ):
        execution = await create(clients, TENANT)
        events = await watch(clients, TENANT, execution.id)
        done = await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
    # Each attempt ran well under a minute, billed as one whole minute: a cent.
    costs = {e.event_type.removeprefix("execution."): e.metrics.cost_usd for e in events}
    assert costs["queued"] == 0
    assert costs["retrying"] == pytest.approx(0.01)
    assert costs["succeeded"] == pytest.approx(0.02)
    assert done.metrics.cost_usd == pytest.approx(0.02)
    assert done.metrics.execution_time_seconds == 1.5, "the executor's metrics are kept"


async def test_a_ten_minute_minimum_bills_a_short_run_as_ten_minutes(
    start_scheduler: StartScheduler,
) -> None:
    async with (
        start_scheduler(prices=PRICES) as running,
        clients_of(running) as clients,
        scripted_executor(clients.address, "v-1", succeed(("2", "a.png", PNG)), provider="ecs"),
    ):
        cheap = await create(clients, TENANT)
        await wait_for_state(clients, TENANT, cheap.id, STATE.EXECUTION_STATE_SUCCEEDED)
    async with (
        start_scheduler(prices=PriceTable({"ecs": PRICES.providers["verda"]})) as running,
        clients_of(running) as clients,
        scripted_executor(clients.address, "v-2", succeed(("2", "a.png", PNG)), provider="ecs"),
    ):
        minimum = await create(clients, TENANT)
        done = await wait_for_state(clients, TENANT, minimum.id, STATE.EXECUTION_STATE_SUCCEEDED)
    assert done.metrics.cost_usd == pytest.approx(6.0), "600 s at $36/h"


async def test_free_executors_cost_nothing(clients: Clients) -> None:
    async with scripted_executor(clients.address, "ex-1", succeed(("2", "a.png", PNG))):
        execution = await create(clients, TENANT)
        done = await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
    assert done.metrics.cost_usd == 0


async def budget(clients: Clients, tenant: str) -> scheduler_pb2.TenantBudget:
    return await clients.scheduler.GetTenantBudget(
        scheduler_pb2.GetTenantBudgetRequest(tenant=tenant)
    )


async def test_a_spent_budget_refuses_new_work_until_it_is_raised(
    start_scheduler: StartScheduler,
) -> None:
    async with (
        start_scheduler(prices=PRICES) as running,
        clients_of(running) as clients,
        scripted_executor(clients.address, "ecs-1", succeed(("2", "a.png", PNG)), provider="ecs"),
    ):
        await clients.scheduler.SetTenantBudget(
            scheduler_pb2.SetTenantBudgetRequest(tenant=TENANT, limit_usd=0.015)
        )
        for _ in range(2):  # a cent each: under the limit before the second one
            execution = await create(clients, TENANT)
            await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
        spent = await budget(clients, TENANT)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(clients, TENANT)
        listed = await clients.executions.ListExecutions(
            executions_pb2.ListExecutionsRequest(), metadata=clients.as_tenant(TENANT)
        )
        other = await create(clients, "other-tenant")
        await clients.scheduler.SetTenantBudget(
            scheduler_pb2.SetTenantBudgetRequest(tenant=TENANT, limit_usd=0)
        )
        again = await create(clients, TENANT)
        unlimited = await budget(clients, TENANT)

    assert (spent.limit_usd, spent.spent_usd) == (0.015, pytest.approx(0.02))
    assert spent.period_start_time.ToDatetime().day == 1
    assert spent.period_end_time.ToDatetime() > spent.period_start_time.ToDatetime()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = from_rpc_error(caught.value).status
    quota, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    assert any(d.Unpack(quota) for d in status.details)
    assert [(v.subject, v.description) for v in quota.violations] == [
        ("tenant:acme", "monthly budget of $0.01 spent")
    ]
    assert any(d.Unpack(retry) for d in status.details)
    assert retry.retry_delay.seconds > 0, "until next month"
    assert len(listed.executions) == 2, "the refused execution was not stored"
    assert other.state == STATE.EXECUTION_STATE_QUEUED
    assert again.state == STATE.EXECUTION_STATE_QUEUED
    assert (unlimited.limit_usd, unlimited.spent_usd) == (0, pytest.approx(0.02))


@pytest.mark.parametrize(
    "request_",
    [
        scheduler_pb2.SetTenantBudgetRequest(tenant="", limit_usd=1),
        scheduler_pb2.SetTenantBudgetRequest(tenant="acme", limit_usd=-1),
        scheduler_pb2.SetTenantBudgetRequest(tenant="acme", limit_usd=float("nan")),
    ],
)
async def test_a_bad_budget_is_refused(
    clients: Clients, request_: scheduler_pb2.SetTenantBudgetRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.scheduler.SetTenantBudget(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await budget(clients, "acme")).limit_usd == 0
