"""Executors registering, queue order, per-tenant caps, listing and queue statistics."""

from __future__ import annotations

import contextlib

import grpc
import pytest

from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.server import Scheduler
from tests.integration.scheduler.conftest import Clients, StartScheduler, clients_of
from tests.integration.scheduler.helpers import STATE, create, get, wait_for_state
from tests.integration.scheduler.scripted_executor import HANG, scripted_executor, succeed
from tests.support.eventually import eventually

TENANT = "acme"
PNG = b"\x89PNG"


async def test_executors_register_heartbeat_and_deregister(clients: Clients) -> None:
    stub = clients.scheduler
    executor = scheduler_pb2.Executor(
        id="ex-9",
        address="127.0.0.1:1",
        provider="ecs",
        engine="comfyui",
        environment="comfy-sd15",
        node_types=["SaveImage", "LoadImage"],
        capacity=scheduler_pb2.ExecutorCapacity(
            gpu=scheduler_pb2.GpuInfo(
                name="NVIDIA H100", total_memory_bytes=80, free_memory_bytes=70
            ),
            slots=2,
            cached_models=["abc"],
        ),
    )
    registered = await stub.RegisterExecutor(
        scheduler_pb2.RegisterExecutorRequest(executor=executor)
    )
    assert registered.heartbeat_interval_seconds == 0.3
    beat = await stub.Heartbeat(
        scheduler_pb2.HeartbeatRequest(
            executor_id="ex-9",
            capacity=scheduler_pb2.ExecutorCapacity(
                gpu=scheduler_pb2.GpuInfo(
                    name="NVIDIA H100", total_memory_bytes=80, free_memory_bytes=10
                ),
                slots=2,
                busy_slots=1,
            ),
        )
    )
    assert not beat.reregister
    # A heartbeat that reports no capacity keeps the last one.
    assert not (await stub.Heartbeat(scheduler_pb2.HeartbeatRequest(executor_id="ex-9"))).reregister
    [listed] = (await stub.ListExecutors(scheduler_pb2.ListExecutorsRequest())).executors
    assert (listed.id, listed.address, listed.provider, listed.engine, listed.environment) == (
        "ex-9",
        "127.0.0.1:1",
        "ecs",
        "comfyui",
        "comfy-sd15",
    )
    assert list(listed.node_types) == ["LoadImage", "SaveImage"]
    assert (listed.capacity.slots, listed.capacity.busy_slots) == (2, 1)
    assert listed.capacity.gpu.free_memory_bytes == 10
    assert listed.HasField("last_seen_time")

    await stub.DeregisterExecutor(scheduler_pb2.DeregisterExecutorRequest(executor_id="ex-9"))
    assert list((await stub.ListExecutors(scheduler_pb2.ListExecutorsRequest())).executors) == []
    again = await stub.Heartbeat(scheduler_pb2.HeartbeatRequest(executor_id="ex-9"))
    assert again.reregister


async def test_a_bad_registration_is_refused(clients: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.scheduler.RegisterExecutor(
            scheduler_pb2.RegisterExecutorRequest(
                executor=scheduler_pb2.Executor(provider="mainframe")
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_executors_whose_heartbeats_stop_are_dropped_and_their_work_retried(
    clients: Clients,
) -> None:
    async with scripted_executor(clients.address, "ex-frozen", HANG) as frozen:
        execution = await create(clients, TENANT)
        await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_RUNNING)
        frozen.stop_heartbeats()

        async def dropped() -> None:
            listed = await clients.scheduler.ListExecutors(scheduler_pb2.ListExecutorsRequest())
            assert [e.id for e in listed.executors] == []
            current = await get(clients, TENANT, execution.id)
            assert current.state == STATE.EXECUTION_STATE_RETRYING

        await eventually(dropped)
        async with scripted_executor(clients.address, "ex-ok", succeed(("2", "a.png", PNG))):
            done = await wait_for_state(
                clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED
            )
    assert (done.attempt, done.executor_id) == (2, "ex-ok")


async def test_higher_priority_runs_first_then_older_first(clients: Clients) -> None:
    low = await create(clients, TENANT, priority=-5)
    first = await create(clients, TENANT)
    second = await create(clients, TENANT)
    high = await create(clients, TENANT, priority=50)
    async with scripted_executor(clients.address, "ex-1", succeed(("2", "a.png", PNG))) as ex:
        await wait_for_state(clients, TENANT, low.id, STATE.EXECUTION_STATE_SUCCEEDED)
    names = {high.id: "high", first.id: "first", second.id: "second", low.id: "low"}
    assert [names[key[0]] for key in ex.servicer.attempts()] == ["high", "first", "second", "low"]


async def test_a_tenant_at_its_cap_does_not_starve_the_others(
    start_scheduler: StartScheduler,
) -> None:
    async with (
        start_scheduler(tenant_concurrency=1) as scheduler,
        clients_of(scheduler) as clients,
        scripted_executor(clients.address, "ex-big", HANG, slots=3) as ex,
    ):
        busy = [await create(clients, "busy-corp") for _ in range(3)]
        await wait_for_state(clients, "busy-corp", busy[0].id, STATE.EXECUTION_STATE_RUNNING)
        other = await create(clients, "small-shop")
        await wait_for_state(clients, "small-shop", other.id, STATE.EXECUTION_STATE_RUNNING)
        states = [(await get(clients, "busy-corp", e.id)).state for e in busy]
        assert states == [
            STATE.EXECUTION_STATE_RUNNING,
            STATE.EXECUTION_STATE_QUEUED,
            STATE.EXECUTION_STATE_QUEUED,
        ]
        stats = await clients.scheduler.GetQueueStats(scheduler_pb2.GetQueueStatsRequest())
        assert (stats.depth, stats.running) == (2, 2)
        assert [(s.tenant, s.priority, s.depth) for s in stats.slices] == [("busy-corp", 0, 2)]
        assert stats.oldest_wait_seconds > 0
        # Finishing the running one lets the next of the same tenant in.
        await clients.executions.CancelExecution(
            executions_pb2.CancelExecutionRequest(id=busy[0].id),
            metadata=clients.as_tenant("busy-corp"),
        )
        await wait_for_state(clients, "busy-corp", busy[1].id, STATE.EXECUTION_STATE_RUNNING)
        assert ex.servicer.max_running == 2


async def test_an_executor_only_gets_workflows_whose_nodes_it_has(clients: Clients) -> None:
    async with contextlib.AsyncExitStack() as stack:
        narrow = await stack.enter_async_context(
            scripted_executor(
                clients.address, "ex-narrow", succeed(), node_types=("LoadImage",), slots=4
            )
        )
        execution = await create(clients, TENANT)  # LoadImage and SaveImage
        wide = await stack.enter_async_context(
            scripted_executor(
                clients.address,
                "ex-wide",
                succeed(("2", "a.png", PNG)),
                node_types=("LoadImage", "SaveImage", "KSampler"),
            )
        )
        done = await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
    assert done.executor_id == "ex-wide"
    assert narrow.servicer.calls == [] and len(wide.servicer.calls) == 1


async def test_listing_pages_newest_first_with_a_state_filter(
    clients: Clients, scheduler: Scheduler
) -> None:
    created = [await create(clients, TENANT, labels={"n": str(n)}) for n in range(5)]
    await create(clients, "someone-else")
    meta = clients.as_tenant(TENANT)
    await clients.executions.CancelExecution(
        executions_pb2.CancelExecutionRequest(id=created[1].id), metadata=meta
    )
    seen: list[str] = []
    token = ""
    while True:
        page = await clients.executions.ListExecutions(
            executions_pb2.ListExecutionsRequest(page_size=2, page_token=token), metadata=meta
        )
        seen += [e.id for e in page.executions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [e.id for e in reversed(created)]

    queued = await clients.executions.ListExecutions(
        executions_pb2.ListExecutionsRequest(state=STATE.EXECUTION_STATE_QUEUED), metadata=meta
    )
    assert [e.id for e in queued.executions] == [created[n].id for n in (4, 3, 2, 0)]
    cancelled = await clients.executions.ListExecutions(
        executions_pb2.ListExecutionsRequest(state=STATE.EXECUTION_STATE_CANCELLED), metadata=meta
    )
    assert [e.id for e in cancelled.executions] == [created[1].id]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.executions.ListExecutions(
            executions_pb2.ListExecutionsRequest(page_token="garbage"), metadata=meta
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
