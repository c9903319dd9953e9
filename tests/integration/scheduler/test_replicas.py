"""Several replicas on one database, a replica that dies, and the attempt fence."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from google.rpc import code_pb2, status_pb2

from comfyfleet.common.errors import error_info
from comfyfleet.executions.v1 import executions_pb2
from services.scheduler.records import OutputRecord
from services.scheduler.server import Scheduler
from services.scheduler.store import Fenced
from tests.integration.scheduler.conftest import Clients, StartScheduler, clients_of
from tests.integration.scheduler.helpers import STATE, create, get, types, wait_for_state, watch
from tests.integration.scheduler.scripted_executor import HANG, fail, scripted_executor, succeed
from tests.support.eventually import eventually

TENANT = "acme"
PNG = b"\x89PNG-bytes"


async def test_two_replicas_never_dispatch_one_execution_twice(
    start_scheduler: StartScheduler,
) -> None:
    async with (
        start_scheduler("replica-a") as a,
        start_scheduler("replica-b") as b,
        clients_of(a) as ca,
        clients_of(b) as cb,
        contextlib.AsyncExitStack() as stack,
    ):
        executors = [
            await stack.enter_async_context(
                scripted_executor(
                    (ca if n % 2 else cb).address, f"ex-{n}", succeed(("2", "o.png", PNG), steps=1)
                )
            )
            for n in range(4)
        ]
        created = await asyncio.gather(
            *(create(ca if n % 2 else cb, TENANT, request_id=f"r{n}") for n in range(24))
        )
        for execution in created:
            done = await wait_for_state(ca, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
            assert done.attempt == 1, execution.id
        calls = Counter(key for ex in executors for key in ex.servicer.attempts())
        dispatched = (a.dispatcher.dispatched, b.dispatcher.dispatched)
    assert sorted(calls) == sorted((e.id, 1) for e in created)
    assert set(calls.values()) == {1}, "every attempt reached exactly one executor once"
    assert {ex.servicer.max_running for ex in executors} == {1}, "a slot holds one attempt"
    assert sum(dispatched) == 24
    assert min(dispatched) > 0, f"both replicas dispatched: {dispatched}"


async def test_a_lost_lease_is_retried_on_another_executor(start_scheduler: StartScheduler) -> None:
    async with contextlib.AsyncExitStack() as stack:
        doomed_stack = await stack.enter_async_context(contextlib.AsyncExitStack())
        doomed = await doomed_stack.enter_async_context(
            start_scheduler("doomed", shutdown_grace_s=0.0)
        )
        doomed_clients = await doomed_stack.enter_async_context(clients_of(doomed))
        stuck = await stack.enter_async_context(
            scripted_executor(doomed_clients.address, "ex-stuck", HANG)
        )
        execution = await create(doomed_clients, TENANT)
        await wait_for_state(doomed_clients, TENANT, execution.id, STATE.EXECUTION_STATE_RUNNING)

        survivor = await stack.enter_async_context(start_scheduler("survivor"))
        clients = await stack.enter_async_context(clients_of(survivor))
        # The executor stays alive and heartbeats to the survivor; a second one waits idle.
        stuck.heartbeat_to(clients.address)
        fresh = await stack.enter_async_context(
            scripted_executor(clients.address, "ex-fresh", succeed(("2", "o.png", PNG)))
        )
        # The doomed replica goes without finishing its attempt: nobody renews the lease.
        await doomed_stack.aclose()

        done = await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
        events = await watch(clients, TENANT, execution.id)
        assert stuck.servicer.attempts() == [(execution.id, 1)]
        assert fresh.servicer.attempts() == [(execution.id, 2)]
    assert (done.attempt, done.executor_id) == (2, "ex-fresh")
    assert doomed.dispatcher.dispatched == 1 and survivor.dispatcher.dispatched == 1
    [retrying] = [e for e in events if e.event_type == "execution.retrying"]
    info = error_info(retrying.error)
    assert info is not None and info.reason == "LEASE_EXPIRED"
    assert (retrying.attempt, retrying.executor_id) == (1, "ex-stuck")


async def test_updates_of_a_stale_attempt_change_nothing(
    scheduler: Scheduler, clients: Clients
) -> None:
    async with scripted_executor(clients.address, "ex-1", fail(retryable=True), HANG):
        execution = await create(clients, TENANT)

        async def second_attempt_runs() -> executions_pb2.Execution:
            current = await get(clients, TENANT, execution.id)
            assert (current.attempt, current.state) == (2, STATE.EXECUTION_STATE_RUNNING)
            return current

        before = await eventually(second_attempt_runs)
        store, stale = scheduler.store, Fenced(execution.id, 1)
        error = status_pb2.Status(code=code_pb2.INTERNAL, message="late")
        progress = executions_pb2.NodeProgress(node_id="1", value=1, max=2)
        output = OutputRecord(1, 0, "k", "2", "f.png", "", "images", "image/png", 1, "00")
        assert not await store.started(stale, 1.0)
        assert not await store.progress(stale, progress, 1.0)
        assert not await store.succeeded(stale, [output], executions_pb2.ExecutionMetrics())
        assert not await store.workflow_failed(stale, error)
        assert not await store.infrastructure_failure(stale, error)
        after = await get(clients, TENANT, execution.id)
        assert (after.state, after.attempt, after.last_sequence) == (
            before.state,
            before.attempt,
            before.last_sequence,
        )
        assert after.outputs == [] and not after.HasField("error")

        # The current attempt passes the fence, until the execution is final.
        assert await store.progress(Fenced(execution.id, 2), progress, 1.0)
        await clients.executions.CancelExecution(
            executions_pb2.CancelExecutionRequest(id=execution.id),
            metadata=clients.as_tenant(TENANT),
        )
        assert not await store.succeeded(
            Fenced(execution.id, 2), [], executions_pb2.ExecutionMetrics()
        )
    final = await get(clients, TENANT, execution.id)
    assert final.state == STATE.EXECUTION_STATE_CANCELLED
    assert types(await watch(clients, TENANT, execution.id))[-2:] == ["progress", "cancelled"]
