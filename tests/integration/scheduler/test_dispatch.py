"""Dispatching to a real gRPC executor: success with outputs, retries, workflow errors,
executors that die, cancellation and timeouts."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2

from comfyfleet.common.errors import error_info
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.scheduler.v1 import scheduler_pb2
from services.scheduler.config import Config
from tests.integration.scheduler.conftest import Clients
from tests.integration.scheduler.helpers import (
    STATE,
    create,
    get,
    stream_has,
    types,
    wait_for_state,
    watch,
)
from tests.integration.scheduler.scripted_executor import (
    DIE,
    END,
    HANG,
    fail,
    scripted_executor,
    succeed,
)
from tests.support.eventually import eventually

TENANT = "acme"
PNG = b"\x89PNG\r\n\x1a\n-output-bytes"


async def download(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        response.raise_for_status()
        return await response.read()


async def test_success_uploads_outputs_to_slots_and_returns_presigned_urls(
    clients: Clients, scheduler_config: Config
) -> None:
    outputs = [("2", "r_00001_.png", PNG), ("2", "r_00002_.png", PNG[::-1])]
    async with scripted_executor(clients.address, "ex-1", succeed(*outputs)) as ex:
        execution = await create(
            clients, TENANT, inputs=[executions_pb2.InputFile(name="cat.png", content=b"cat")]
        )
        events = await watch(clients, TENANT, execution.id)
    done = await get(clients, TENANT, execution.id)

    assert types(events) == [
        "queued",
        "dispatched",
        "running",
        "progress",
        "progress",
        "succeeded",
    ]
    assert [e.sequence for e in events] == list(range(1, 7))
    assert ex.servicer.inputs_seen == {"cat.png": b"cat"}
    [request] = ex.servicer.calls
    assert (request.execution_id, request.attempt, request.tenant) == (execution.id, 1, TENANT)
    assert [s.index for s in request.output_slots] == [0, 1, 2, 3]
    assert request.run_timeout.seconds == int(scheduler_config.settings.run_timeout_s)

    assert done.state == STATE.EXECUTION_STATE_SUCCEEDED
    assert (done.attempt, done.executor_id, done.provider) == (1, "ex-1", "local")
    assert [(o.node_id, o.filename, o.size_bytes, o.kind) for o in done.outputs] == [
        ("2", "r_00001_.png", len(PNG), "images"),
        ("2", "r_00002_.png", len(PNG), "images"),
    ]
    assert [await download(o.url) for o in done.outputs] == [PNG, PNG[::-1]]
    assert done.outputs[0].url_expire_time.seconds > done.update_time.seconds
    assert done.metrics.execution_time_seconds == 1.5
    assert done.metrics.memory_used_bytes == 4096
    assert done.metrics.queue_time_seconds > 0
    assert done.HasField("start_time") and done.HasField("end_time")

    succeeded = events[-1]
    assert succeeded.status == STATE.EXECUTION_STATE_SUCCEEDED
    assert (succeeded.attempt, succeeded.executor_id, succeeded.provider) == (1, "ex-1", "local")
    assert [await download(url) for url in succeeded.output_urls] == [PNG, PNG[::-1]]
    assert [o.sha256 for o in succeeded.outputs] == [o.sha256 for o in done.outputs]
    assert succeeded.metrics.queue_time_seconds == done.metrics.queue_time_seconds
    progress = events[3].progress
    assert (progress.node_id, progress.value, progress.max) == ("1", 1, 2)

    published = await stream_has(
        scheduler_config.nats.url, scheduler_config.nats.stream, execution.id, len(events)
    )
    assert [e.event_id for _, e in published] == [e.event_id for e in events]
    assert [h["Nats-Msg-Id"] for h, _ in published] == [e.event_id for e in events]


async def test_retryable_failures_back_off_then_fail_with_the_last_reason(
    clients: Clients,
) -> None:
    async with scripted_executor(
        clients.address, "ex-flaky", fail(retryable=True, message="GPU fell off the bus")
    ) as ex:
        execution = await create(clients, TENANT)
        events = await watch(clients, TENANT, execution.id)
    failed = await get(clients, TENANT, execution.id)

    assert types(events) == [
        "queued",
        *(["dispatched", "running", "progress", "progress", "retrying"] * 2),
        "dispatched",
        "running",
        "progress",
        "progress",
        "failed",
    ]
    assert ex.servicer.attempts() == [(execution.id, n) for n in (1, 2, 3)]
    assert failed.state == STATE.EXECUTION_STATE_FAILED
    assert failed.attempt == 3
    assert failed.error.code == code_pb2.UNAVAILABLE
    assert failed.error.message == "all 3 attempts failed; the last one: GPU fell off the bus"
    retrying = [e for e in events if e.event_type == "execution.retrying"]
    assert [e.error.message for e in retrying] == ["GPU fell off the bus"] * 2
    dispatched = [e for e in events if e.event_type == "execution.dispatched"]
    base = 0.2  # the test settings' backoff base: each wait is at least half the nominal delay
    for n, (failure, retry) in enumerate(zip(retrying, dispatched[1:], strict=True), start=1):
        waited = retry.timestamp.ToDatetime() - failure.timestamp.ToDatetime()
        assert waited.total_seconds() >= base * 2 ** (n - 1) / 2, n


async def test_a_workflow_error_fails_at_once_and_is_not_retried(clients: Clients) -> None:
    async with scripted_executor(
        clients.address, "ex-1", fail(retryable=False, message="node 2 raised ValueError")
    ) as ex:
        execution = await create(clients, TENANT, max_attempts=5)
        events = await watch(clients, TENANT, execution.id)
    failed = await get(clients, TENANT, execution.id)
    assert types(events)[-2:] == ["progress", "failed"]
    assert "retrying" not in types(events)
    assert len(ex.servicer.calls) == 1
    assert (failed.state, failed.attempt) == (STATE.EXECUTION_STATE_FAILED, 1)
    assert (failed.error.code, failed.error.message) == (
        code_pb2.INVALID_ARGUMENT,
        "node 2 raised ValueError",
    )


async def test_an_executor_that_dies_mid_stream_is_retried(clients: Clients) -> None:
    async with scripted_executor(clients.address, "ex-1", DIE, END, succeed(("2", "a.png", PNG))):
        execution = await create(clients, TENANT)
        events = await watch(clients, TENANT, execution.id)
    assert types(events) == [
        "queued",
        "dispatched",
        "running",
        "retrying",
        "dispatched",
        "running",
        "retrying",
        "dispatched",
        "running",
        "progress",
        "progress",
        "succeeded",
    ]
    died, ended = (e for e in events if e.event_type == "execution.retrying")
    assert (died.error.code, died.error.message) == (
        code_pb2.UNAVAILABLE,
        "the connection to executor ex-1 was lost during the attempt"
        " (killed, crashed or unreachable): executor crashed",
    )
    info = error_info(ended.error)
    assert info is not None and info.reason == "EXECUTOR_STREAM_ENDED"
    assert events[-1].attempt == 3


async def test_an_executor_that_dies_every_attempt_ends_failed_saying_so(
    clients: Clients,
) -> None:
    async with scripted_executor(clients.address, "ex-1", DIE) as ex:
        execution = await create(clients, TENANT, max_attempts=2)
        events = await watch(clients, TENANT, execution.id)
    failed = await get(clients, TENANT, execution.id)

    assert types(events)[-4:] == ["retrying", "dispatched", "running", "failed"]
    assert ex.servicer.attempts() == [(execution.id, 1), (execution.id, 2)]
    assert (failed.state, failed.attempt) == (STATE.EXECUTION_STATE_FAILED, 2)
    assert failed.error.code == code_pb2.UNAVAILABLE
    assert failed.error.message == (
        "the executor died during the attempt 2 times (last: connection lost): the connection"
        " to executor ex-1 was lost during the attempt (killed, crashed or unreachable):"
        " executor crashed"
    )
    info = error_info(failed.error)
    assert info is not None and info.reason == "EXECUTOR_DIED"


async def test_an_unreachable_executor_is_forgotten_and_the_work_retried(
    clients: Clients,
) -> None:
    async with scripted_executor(clients.address, "ex-gone", HANG) as gone:
        gone.stop_heartbeats()
        await gone.server.stop(0)
        execution = await create(clients, TENANT)
        await eventually(lambda: _retrying_or_later(clients, execution.id))
        listed = await clients.scheduler.ListExecutors(scheduler_pb2.ListExecutorsRequest())
        assert [e.id for e in listed.executors] == []
        async with scripted_executor(clients.address, "ex-good", succeed(("2", "a.png", PNG))):
            done = await wait_for_state(
                clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED
            )
    assert (done.attempt, done.executor_id) == (2, "ex-good")


async def _retrying_or_later(clients: Clients, execution_id: str) -> None:
    execution = await get(clients, TENANT, execution_id)
    assert execution.attempt == 1
    assert execution.state == STATE.EXECUTION_STATE_RETRYING


async def test_cancelling_a_queued_execution_is_immediate_and_idempotent(
    clients: Clients,
) -> None:
    execution = await create(clients, TENANT)
    request = executions_pb2.CancelExecutionRequest(id=execution.id)
    cancelled = await clients.executions.CancelExecution(
        request, metadata=clients.as_tenant(TENANT)
    )
    again = await clients.executions.CancelExecution(request, metadata=clients.as_tenant(TENANT))
    assert cancelled.state == again.state == STATE.EXECUTION_STATE_CANCELLED
    assert cancelled.error.code == code_pb2.CANCELLED
    assert again.last_sequence == cancelled.last_sequence == 2
    assert again.update_time == cancelled.update_time
    assert types(await watch(clients, TENANT, execution.id)) == ["queued", "cancelled"]
    # A cancelled execution is never dispatched.
    async with scripted_executor(clients.address, "ex-1") as ex:
        await clients.scheduler.GetQueueStats(scheduler_pb2.GetQueueStatsRequest())
        assert ex.servicer.calls == []


async def test_cancelling_a_running_execution_interrupts_its_executor(clients: Clients) -> None:
    async with scripted_executor(clients.address, "ex-1", HANG) as ex:
        execution = await create(clients, TENANT)
        await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_RUNNING)
        cancelled = await clients.executions.CancelExecution(
            executions_pb2.CancelExecutionRequest(id=execution.id),
            metadata=clients.as_tenant(TENANT),
        )
        assert cancelled.state == STATE.EXECUTION_STATE_CANCELLED
        assert ex.servicer.cancels == [(execution.id, 1)]

        async def stopped() -> None:
            assert ex.servicer.running == set()

        await eventually(stopped)
    events = await watch(clients, TENANT, execution.id)
    assert types(events) == ["queued", "dispatched", "running", "cancelled"]
    final = await get(clients, TENANT, execution.id)
    assert final.state == STATE.EXECUTION_STATE_CANCELLED
    assert final.last_sequence == 4, "the executor's late report changed nothing"


async def test_a_cancelled_finished_execution_is_returned_unchanged(clients: Clients) -> None:
    async with scripted_executor(clients.address, "ex-1", succeed(("2", "a.png", PNG))):
        execution = await create(clients, TENANT)
        done = await wait_for_state(clients, TENANT, execution.id, STATE.EXECUTION_STATE_SUCCEEDED)
    after = await clients.executions.CancelExecution(
        executions_pb2.CancelExecutionRequest(id=execution.id), metadata=clients.as_tenant(TENANT)
    )
    assert after.state == STATE.EXECUTION_STATE_SUCCEEDED
    assert (after.last_sequence, after.update_time) == (done.last_sequence, done.update_time)
    assert not after.HasField("error")


async def test_an_execution_nobody_starts_fails_at_its_queue_timeout(clients: Clients) -> None:
    execution = await create(
        clients, TENANT, queue_timeout=duration_pb2.Duration(nanos=300_000_000)
    )
    events = await watch(clients, TENANT, execution.id)
    assert types(events) == ["queued", "failed"]
    assert events[-1].error.code == code_pb2.DEADLINE_EXCEEDED
    info = error_info(events[-1].error)
    assert info is not None and info.reason == "QUEUE_TIMEOUT"


async def test_an_attempt_past_its_run_timeout_fails_and_is_stopped(clients: Clients) -> None:
    async with scripted_executor(clients.address, "ex-1", HANG) as ex:
        execution = await create(
            clients, TENANT, run_timeout=duration_pb2.Duration(nanos=200_000_000)
        )
        events = await watch(clients, TENANT, execution.id)

        async def told_to_stop() -> None:
            assert ex.servicer.cancels == [(execution.id, 1)]

        await eventually(told_to_stop)
    assert types(events) == ["queued", "dispatched", "running", "failed"]
    assert events[-1].error.code == code_pb2.DEADLINE_EXCEEDED
    info = error_info(events[-1].error)
    assert info is not None and info.reason == "RUN_TIMEOUT"


async def test_watch_resumes_after_a_sequence_number(clients: Clients) -> None:
    async with scripted_executor(clients.address, "ex-1", succeed(("2", "a.png", PNG))):
        execution = await create(clients, TENANT)
        everything = await watch(clients, TENANT, execution.id)
    rest = await watch(clients, TENANT, execution.id, after=3)
    assert [e.event_id for e in rest] == [e.event_id for e in everything[3:]]
    assert await watch(clients, TENANT, execution.id, after=len(everything)) == []


async def test_watch_of_an_unknown_execution_is_not_found(clients: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch(clients, TENANT, "exe_unknown")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
