"""Failover between providers: the RunPod endpoint (the real RunPod worker under the SDK's
local API server) answers 5xx, then stops answering; its breaker opens and work goes to the
ECS executors; after the open wait a probe closes it and RunPod gets work again."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from google.rpc import code_pb2

from comfyfleet.common.errors import error_info
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.breaker import BreakerPolicy
from services.scheduler.providers.runpod import RunpodConfig
from tests.integration.scheduler.conftest import Clients, StartScheduler, clients_of
from tests.integration.scheduler.helpers import STATE, create, get, wait_for_state, watch
from tests.integration.scheduler.runpod_endpoint import (
    ERROR,
    HANG,
    PASS,
    FaultyProxy,
    faulty_proxy,
    sdk_endpoint,
)
from tests.integration.scheduler.scripted_executor import scripted_executor, succeed
from tests.support.eventually import eventually
from tests.support.paths import comfyui_ref

TENANT = "acme"
PNG = b"\x89PNG-from-ecs"
CB = scheduler_pb2.CircuitBreakerState
OPEN_WAIT_S = 5.0
# The healthy first call and two failed ones (2 of 3) open the provider's breaker; one
# probe decides.
PROVIDER = BreakerPolicy(
    window_s=60, minimum_calls=3, failure_rate=0.6, open_wait_s=OPEN_WAIT_S, half_open_probes=1
)
NEVER = BreakerPolicy(minimum_calls=1000)
WORKFLOW = (comfyui_ref() / "workflows" / "a_tiny.json").read_text()


@pytest.fixture(scope="module")
async def sdk_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with sdk_endpoint(tmp_path_factory.mktemp("runpod")) as url:
        yield url


async def provider_of(clients: Clients, execution_id: str) -> str:
    done = await wait_for_state(clients, TENANT, execution_id, STATE.EXECUTION_STATE_SUCCEEDED)
    return done.provider


async def runpod_breaker(clients: Clients) -> scheduler_pb2.CircuitBreaker:
    listed = await clients.scheduler.ListCircuitBreakers(scheduler_pb2.ListCircuitBreakersRequest())
    [found] = [b for b in listed.circuit_breakers if b.name == "provider/runpod"]
    return found


async def left_runpod(clients: Clients, execution_id: str) -> None:
    """Waits until the execution's first attempt failed on RunPod."""

    async def retried() -> None:
        execution = await get(clients, TENANT, execution_id)
        assert execution.attempt >= 2 or execution.state == STATE.EXECUTION_STATE_SUCCEEDED

    await eventually(retried, timeout=15)


async def retry_reason(clients: Clients, execution_id: str) -> str:
    events = await watch(clients, TENANT, execution_id)
    [retrying] = [e for e in events if e.event_type == "execution.retrying"]
    assert retrying.provider == "runpod"
    info = error_info(retrying.error)
    assert info is not None
    return info.reason


@contextlib.asynccontextmanager
async def platform(start_scheduler: StartScheduler, proxy: FaultyProxy) -> AsyncIterator[Clients]:
    endpoint = RunpodConfig(
        endpoint_url=proxy.url,
        endpoint_id="local-sdk",
        max_in_flight=1,
        request_timeout_s=1.0,
        stream_timeout_s=60.0,
        poll_interval_s=0.1,
        start_timeout_s=60.0,
    )
    async with (
        start_scheduler(runpod=endpoint, provider_breaker=PROVIDER, executor_breaker=NEVER) as s,
        clients_of(s) as clients,
    ):

        async def registered() -> None:
            listed = await clients.scheduler.ListExecutors(scheduler_pb2.ListExecutorsRequest())
            assert "runpod-local-sdk" in [e.id for e in listed.executors]

        await eventually(registered)
        yield clients


async def test_runpod_failing_sends_work_to_ecs_until_a_probe_brings_it_back(
    start_scheduler: StartScheduler, sdk_url: str
) -> None:
    ecs_scripts = [succeed(("2", "o.png", PNG))] * 3 + [succeed(("2", "o.png", PNG), gated=True)]
    async with (
        faulty_proxy(sdk_url) as proxy,
        platform(start_scheduler, proxy) as clients,
        scripted_executor(clients.address, "ecs-1", *ecs_scripts, provider="ecs") as ecs,
    ):
        # Healthy, RunPod is the cheaper provider: the real worker runs the workflow.
        first = await create(clients, TENANT, workflow_json=WORKFLOW)
        assert await provider_of(clients, first.id) == "runpod"
        done = await get(clients, TENANT, first.id)
        assert [o.filename for o in done.outputs] == ["bench_a_00001_.png"]
        assert ecs.servicer.calls == []

        # 5xx, then no answer at all: each first attempt fails on RunPod and is retried on ECS.
        proxy.mode = ERROR
        answered_5xx = await create(clients, TENANT, workflow_json=WORKFLOW)
        await left_runpod(clients, answered_5xx.id)
        proxy.mode = HANG
        timed_out = await create(clients, TENANT, workflow_json=WORKFLOW)
        await left_runpod(clients, timed_out.id)
        assert await provider_of(clients, answered_5xx.id) == "ecs"
        assert await provider_of(clients, timed_out.id) == "ecs"
        assert await retry_reason(clients, answered_5xx.id) == "RUNPOD_HTTP_ERROR"
        assert await retry_reason(clients, timed_out.id) == "RUNPOD_TIMEOUT"
        opened = await runpod_breaker(clients)
        assert opened.state == CB.CIRCUIT_BREAKER_STATE_OPEN

        # Open: new work goes straight to ECS; RunPod is not even asked.
        runs = proxy.runs()
        direct = await create(clients, TENANT, workflow_json=WORKFLOW)
        assert await provider_of(clients, direct.id) == "ecs"
        assert (await get(clients, TENANT, direct.id)).attempt == 1
        assert proxy.runs() == runs

        # RunPod recovers. ECS is busy with a long run, so the next execution waits for the
        # breaker's open wait, goes to RunPod as the probe, and closes the breaker.
        proxy.mode = PASS
        busy = await create(clients, TENANT, workflow_json=WORKFLOW)
        await wait_for_state(clients, TENANT, busy.id, STATE.EXECUTION_STATE_RUNNING)
        probe = await create(clients, TENANT, workflow_json=WORKFLOW)
        probed = await wait_for_state(
            clients, TENANT, probe.id, STATE.EXECUTION_STATE_SUCCEEDED, wait_s=30
        )
        closed = await runpod_breaker(clients)
        after = await create(clients, TENANT, workflow_json=WORKFLOW)
        assert await provider_of(clients, after.id) == "runpod"
        ecs.servicer.gate.set()
        assert await provider_of(clients, busy.id) == "ecs"

    assert probed.provider == "runpod"
    waited = probed.start_time.ToDatetime() - opened.state_change_time.ToDatetime()
    assert waited.total_seconds() >= OPEN_WAIT_S * 0.9
    assert closed.state == CB.CIRCUIT_BREAKER_STATE_CLOSED
    assert closed.transitions == 3, "closed -> open -> half-open -> closed"
    assert [(c.execution_id, c.attempt) for c in ecs.servicer.calls] == [
        (answered_5xx.id, 2),
        (timed_out.id, 2),
        (direct.id, 1),
        (busy.id, 1),
    ]


async def test_a_runpod_job_that_the_worker_rejects_is_a_workflow_error(
    start_scheduler: StartScheduler, sdk_url: str
) -> None:
    bad = '{"1": {"class_type": "NoSuchNode", "inputs": {}}}'
    async with faulty_proxy(sdk_url) as proxy, platform(start_scheduler, proxy) as clients:
        execution = await create(clients, TENANT, workflow_json=bad, max_attempts=3)
        failed = await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_FAILED)
        breaker = await runpod_breaker(clients)
    assert (failed.attempt, failed.provider) == (1, "runpod")
    assert failed.error.code == code_pb2.INVALID_ARGUMENT, "the worker's validation"
    assert (breaker.calls, breaker.failed_calls) == (1, 0)
