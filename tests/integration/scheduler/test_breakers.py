"""Circuit breakers around real gRPC executors: failing executors stop getting work, probes
bring them back, workflow errors never count, and every change is visible."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats
from nats.aio.msg import Msg

from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.breaker import BreakerPolicy
from services.scheduler.config import Config
from tests.integration.scheduler.conftest import Clients, StartScheduler, clients_of
from tests.integration.scheduler.helpers import STATE, create, wait_for_state
from tests.integration.scheduler.scripted_executor import fail, scripted_executor, succeed
from tests.support.eventually import eventually

TENANT = "acme"
PNG = b"\x89PNG"
CB = scheduler_pb2.CircuitBreakerState
# An executor's breaker trips on two failures out of two; the provider's never does here.
TRIP_FAST = BreakerPolicy(window_s=60, minimum_calls=2, failure_rate=1.0, open_wait_s=60)
NEVER = BreakerPolicy(minimum_calls=1000)


async def breakers(clients: Clients) -> dict[str, scheduler_pb2.CircuitBreaker]:
    listed = await clients.scheduler.ListCircuitBreakers(scheduler_pb2.ListCircuitBreakersRequest())
    return {b.name: b for b in listed.circuit_breakers}


@contextlib.asynccontextmanager
async def breaker_events(
    nats_url: str, subject: str
) -> AsyncIterator[list[scheduler_pb2.CircuitBreakerEvent]]:
    received: list[scheduler_pb2.CircuitBreakerEvent] = []

    async def on_message(msg: Msg) -> None:
        received.append(scheduler_pb2.CircuitBreakerEvent.FromString(msg.data))

    nc = await nats.connect(nats_url)
    try:
        await nc.subscribe(subject, cb=on_message)
        await nc.flush()
        yield received
    finally:
        await nc.close()


async def test_a_failing_executor_is_cut_off_and_work_goes_elsewhere(
    start_scheduler: StartScheduler, scheduler_config: Config
) -> None:
    async with (
        breaker_events(scheduler_config.nats.url, scheduler_config.breaker_subject) as events,
        start_scheduler(executor_breaker=TRIP_FAST, provider_breaker=NEVER) as running,
        clients_of(running) as clients,
        scripted_executor(clients.address, "ex-bad", fail(retryable=True)) as bad,
    ):
        failed = [await create(clients, TENANT, max_attempts=1) for _ in range(2)]
        for execution in failed:
            await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_FAILED)
        found = await breakers(clients)
        assert found["executor/ex-bad"].state == CB.CIRCUIT_BREAKER_STATE_OPEN
        assert (found["executor/ex-bad"].failed_calls, found["executor/ex-bad"].calls) == (0, 0)
        assert found["provider/local"].state == CB.CIRCUIT_BREAKER_STATE_CLOSED
        assert found["provider/local"].failed_calls == 2

        async with scripted_executor(
            clients.address, "ex-good", succeed(("2", "a.png", PNG))
        ) as good:
            # ex-bad sorts first among equals: only its open breaker sends the work past it.
            execution = await create(clients, TENANT)
            done = await wait_for_state(
                clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED
            )
        stats = await clients.scheduler.GetQueueStats(scheduler_pb2.GetQueueStatsRequest())
    assert done.executor_id == "ex-good"
    assert good.servicer.attempts() == [(execution.id, 1)]
    assert len(bad.servicer.calls) == 2
    [local] = [p for p in stats.providers if p.provider == "local"]
    assert local.breaker_state == CB.CIRCUIT_BREAKER_STATE_CLOSED

    async def published() -> scheduler_pb2.CircuitBreakerEvent:
        [event] = [e for e in events if e.breaker == "executor/ex-bad"]
        return event

    event = await eventually(published)
    assert (event.scope, event.target) == ("executor", "ex-bad")
    assert (event.from_state, event.to_state) == (
        CB.CIRCUIT_BREAKER_STATE_CLOSED,
        CB.CIRCUIT_BREAKER_STATE_OPEN,
    )
    assert event.reason == "2 of 2 calls failed in the last 60s"
    assert event.replica == "scheduler" and event.HasField("timestamp")


async def test_after_the_open_wait_a_probe_closes_the_breaker(
    start_scheduler: StartScheduler,
) -> None:
    wait_s = 1.0
    policy = BreakerPolicy(window_s=60, minimum_calls=2, open_wait_s=wait_s, half_open_probes=1)
    async with (
        start_scheduler(executor_breaker=policy, provider_breaker=NEVER) as running,
        clients_of(running) as clients,
        scripted_executor(
            clients.address,
            "ex-flaky",
            fail(retryable=True),
            fail(retryable=True),
            succeed(("2", "a.png", PNG)),
        ) as flaky,
    ):
        for _ in range(2):
            execution = await create(clients, TENANT, max_attempts=1)
            await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_FAILED)
        opened = (await breakers(clients))["executor/ex-flaky"]
        assert opened.state == CB.CIRCUIT_BREAKER_STATE_OPEN
        probe = await create(clients, TENANT)
        done = await wait_for_state(clients, TENANT, probe.id, STATE.EXECUTION_STATE_SUCCEEDED)
        closed = (await breakers(clients))["executor/ex-flaky"]
    waited = done.start_time.ToDatetime() - opened.state_change_time.ToDatetime()
    assert waited.total_seconds() >= wait_s * 0.9, "nothing went through before the wait"
    assert closed.state == CB.CIRCUIT_BREAKER_STATE_CLOSED
    assert closed.transitions == 3, "closed -> open -> half-open -> closed"
    assert len(flaky.servicer.calls) == 3


async def test_workflow_errors_never_trip_a_breaker(start_scheduler: StartScheduler) -> None:
    async with (
        start_scheduler(executor_breaker=TRIP_FAST, provider_breaker=TRIP_FAST) as running,
        clients_of(running) as clients,
        scripted_executor(clients.address, "ex-1", fail(retryable=False)) as ex,
    ):
        for _ in range(3):
            execution = await create(clients, TENANT)
            await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_FAILED)
        found = await breakers(clients)
    assert len(ex.servicer.calls) == 3
    for name in ("executor/ex-1", "provider/local"):
        assert found[name].state == CB.CIRCUIT_BREAKER_STATE_CLOSED, name
        assert (found[name].calls, found[name].failed_calls) == (3, 0), name


async def test_breakers_are_listed_providers_first(clients: Clients) -> None:
    async with scripted_executor(clients.address, "ex-1", succeed(("2", "a.png", PNG))):
        execution = await create(clients, TENANT)
        await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
    listed = await clients.scheduler.ListCircuitBreakers(scheduler_pb2.ListCircuitBreakersRequest())
    assert [b.name for b in listed.circuit_breakers] == ["provider/local", "executor/ex-1"]
    assert listed.replica == "scheduler"
    provider = listed.circuit_breakers[0]
    assert (provider.scope, provider.target, provider.calls) == ("provider", "local", 1)
    assert provider.calls_in_flight == 0
