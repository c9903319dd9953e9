"""The overall deadline, and a tenant's own concurrency cap sent by the gateway."""

from __future__ import annotations

from google.protobuf import duration_pb2
from google.rpc import code_pb2

from comfyfleet.common.errors import error_info
from comfyfleet.common.tenancy import tenant_metadata
from comfyfleet.executions.v1 import executions_pb2
from tests.integration.scheduler.conftest import Clients
from tests.integration.scheduler.helpers import (
    STATE,
    create,
    get,
    graph_json,
    types,
    wait_for_state,
    watch,
)
from tests.integration.scheduler.scripted_executor import HANG, fail, scripted_executor, succeed
from tests.support.eventually import eventually

TENANT = "acme"
HALF_A_SECOND = duration_pb2.Duration(nanos=500_000_000)


async def test_the_deadline_stops_a_running_execution(clients: Clients) -> None:
    async with scripted_executor(clients.address, "ex-1", HANG) as ex:
        execution = await create(clients, TENANT, timeout=HALF_A_SECOND)
        events = await watch(clients, TENANT, execution.id)

        async def told_to_stop() -> None:
            assert ex.servicer.cancels == [(execution.id, 1)]

        await eventually(told_to_stop)
    assert types(events) == ["queued", "dispatched", "running", "failed"]
    failed = events[-1]
    assert failed.error.code == code_pb2.DEADLINE_EXCEEDED
    info = error_info(failed.error)
    assert info is not None and info.reason == "EXECUTION_TIMEOUT"


async def test_the_deadline_ends_retries_too(clients: Clients) -> None:
    async with scripted_executor(clients.address, "ex-1", fail(retryable=True)):
        execution = await create(clients, TENANT, timeout=HALF_A_SECOND, max_attempts=10)
        failed = await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_FAILED)
    info = error_info(failed.error)
    assert info is not None and info.reason == "EXECUTION_TIMEOUT"
    assert failed.attempt < 10


async def test_a_waiting_execution_fails_at_its_deadline(clients: Clients) -> None:
    execution = await create(clients, TENANT, timeout=HALF_A_SECOND)
    failed = await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_FAILED)
    info = error_info(failed.error)
    assert info is not None and info.reason == "EXECUTION_TIMEOUT"
    assert failed.attempt == 0


async def test_a_tenants_own_cap_from_the_gateway_holds(clients: Clients) -> None:
    capped = tenant_metadata("capped", max_concurrency=1)
    async with scripted_executor(clients.address, "ex-big", HANG, slots=4) as ex:
        first, second = [
            await clients.executions.CreateExecution(
                executions_pb2.CreateExecutionRequest(workflow_json=graph_json()), metadata=capped
            )
            for _ in range(2)
        ]
        others = [await create(clients, TENANT) for _ in range(2)]
        for execution in others:
            await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_RUNNING)
        await wait_for_state(clients, "capped", first.id, STATE.EXECUTION_STATE_RUNNING)
        assert (await get(clients, "capped", second.id)).state == STATE.EXECUTION_STATE_QUEUED
        assert ex.servicer.max_running == 3


async def test_work_nobody_can_run_now_does_not_block_the_queue(clients: Clients) -> None:
    exotic = '{"1": {"class_type": "ExoticSampler", "inputs": {}}}'
    stuck = [await create(clients, TENANT, workflow_json=exotic) for _ in range(40)]
    runnable = await create(clients, TENANT)
    async with scripted_executor(
        clients.address,
        "ex-plain",
        succeed(("2", "a.png", b"\x89PNG")),
        node_types=("LoadImage", "SaveImage"),
    ):
        await wait_for_state(clients, TENANT, runnable.id, STATE.EXECUTION_STATE_SUCCEEDED)
    assert (await get(clients, TENANT, stuck[0].id)).state == STATE.EXECUTION_STATE_QUEUED
