"""Cancel, the single slot, the run timeout, GetStatus and shutdown of a running attempt."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from comfyfleet.common.errors import error_info
from comfyfleet.common.storage import ObjectStore
from comfyfleet.executor.v1 import executor_pb2
from services.executor.engine import Engine
from tests.integration.executor.conftest import (
    ExecutorUnderTest,
    GatedEngine,
    StartExecutor,
    collect,
    make_job,
    workflow_text,
)
from tests.support.eventually import eventually


@pytest.fixture
def gated(native_engine: Engine) -> GatedEngine:
    """Holds a_tiny's second node (ImageInvert) until the gate opens or the run is cancelled."""
    return GatedEngine(native_engine, "2")


async def wait_held(engine: GatedEngine) -> None:
    async def check() -> None:
        assert engine.held.is_set()

    await eventually(check)


async def test_cancel_interrupts_the_running_attempt(
    start_executor: StartExecutor, gated: GatedEngine, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("a_tiny"))
    async with start_executor(engine=gated) as ex:
        stream = asyncio.create_task(collect(ex.stub, job.request))
        await wait_held(gated)

        answer = await ex.stub.Cancel(
            executor_pb2.CancelRequest(execution_id=job.request.execution_id, attempt=1)
        )
        updates = await stream

        assert answer.found is True
        failed = updates[-1].failed
        assert updates[-1].WhichOneof("update") == "failed"
        assert failed.error.code == code_pb2.CANCELLED
        assert failed.retryable is False
        ran = [
            u.node.progress.node_id for u in updates if u.node.state == executor_pb2.NODE_STATE_DONE
        ]
        assert "3" not in ran  # it stopped before the output node
        assert await store.size(job.output_keys[0]) is None
        again = await ex.stub.Cancel(
            executor_pb2.CancelRequest(execution_id=job.request.execution_id, attempt=1)
        )
        assert again.found is False


async def test_cancel_of_an_unknown_attempt_finds_nothing(executor: ExecutorUnderTest) -> None:
    answer = await executor.stub.Cancel(
        executor_pb2.CancelRequest(execution_id="exe-unknown", attempt=3)
    )
    assert answer.found is False


async def test_a_second_execute_while_busy_is_resource_exhausted(
    start_executor: StartExecutor, gated: GatedEngine, store: ObjectStore
) -> None:
    first = await make_job(store, workflow_text("a_tiny"))
    second = await make_job(store, workflow_text("a_tiny"))
    async with start_executor(engine=gated) as ex:
        stream = asyncio.create_task(collect(ex.stub, first.request))
        await wait_held(gated)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await collect(ex.stub, second.request)
        gated.gate.set()
        updates = await stream
        after = await collect(ex.stub, second.request)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(refused.value)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details)
    assert updates[-1].WhichOneof("update") == "completed"
    assert after[-1].WhichOneof("update") == "completed"


async def test_the_run_timeout_cancels_the_run_as_a_retryable_failure(
    start_executor: StartExecutor, gated: GatedEngine, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("a_tiny"), run_timeout_s=0.3)
    async with start_executor(engine=gated) as ex:
        updates = await collect(ex.stub, job.request)

    failed = updates[-1].failed
    assert failed.error.code == code_pb2.DEADLINE_EXCEEDED
    assert failed.retryable is True


async def test_get_status_reports_the_running_attempt_and_capacity(
    start_executor: StartExecutor, gated: GatedEngine, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("a_tiny"), attempt=2)
    async with start_executor(engine=gated) as ex:
        idle = await ex.stub.GetStatus(executor_pb2.GetStatusRequest())
        stream = asyncio.create_task(collect(ex.stub, job.request))
        await wait_held(gated)
        busy = await ex.stub.GetStatus(executor_pb2.GetStatusRequest())
        gated.gate.set()
        await stream

        async def idle_again() -> None:
            status = await ex.stub.GetStatus(executor_pb2.GetStatusRequest())
            assert status.capacity.busy_slots == 0 and status.execution_id == ""

        await eventually(idle_again)

    assert idle.executor_id == ex.running.identity.executor_id
    assert (idle.execution_id, idle.capacity.busy_slots, idle.capacity.slots) == ("", 0, 1)
    assert idle.capacity.gpu.name == "cpu"
    assert idle.capacity.gpu.total_memory_bytes > 0
    assert (busy.execution_id, busy.attempt) == (job.request.execution_id, 2)
    assert busy.capacity.busy_slots == 1


async def test_shutdown_hands_back_an_attempt_that_outlasts_the_grace(
    start_executor: StartExecutor, gated: GatedEngine, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("a_tiny"))
    async with start_executor(engine=gated, shutdown_grace_s=0.2) as ex:
        stream = asyncio.create_task(collect(ex.stub, job.request))
        await wait_held(gated)
    updates = await stream

    failed = updates[-1].failed
    assert failed.error.code == code_pb2.UNAVAILABLE
    assert failed.retryable is True
    info = error_info(failed.error)
    assert info is not None and info.reason == "EXECUTOR_SHUTDOWN"


async def test_shutdown_lets_a_running_attempt_finish_within_the_grace(
    start_executor: StartExecutor, gated: GatedEngine, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("a_tiny"))
    async with start_executor(engine=gated, shutdown_grace_s=10.0) as ex:
        stream = asyncio.create_task(collect(ex.stub, job.request))
        await wait_held(gated)
        # Opened only once shutdown began: the attempt must still be allowed to finish.
        asyncio.get_running_loop().call_later(0.1, gated.gate.set)
    updates = await stream

    assert updates[-1].WhichOneof("update") == "completed"
    assert (
        await store.size(job.output_keys[0]) == updates[-1].completed.outputs[0].output.size_bytes
    )


async def test_a_bad_request_is_invalid_argument(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(store, workflow_text("a_tiny"))
    job.request.attempt = 0
    job.request.inputs.append(executor_pb2.InputRef(name="../escape.png", url="http://x"))

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await collect(executor.stub, job.request)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert {v.field for v in bad.field_violations} == {"attempt", "inputs[0].name"}


# GrowMask's 16384 dilation steps of a 256x256 mask take about a minute on one CPU core.
LONG_LOOP = json.dumps(
    {
        "1": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 256, "height": 256}},
        "2": {
            "class_type": "GrowMask",
            "inputs": {"mask": ["1", 0], "expand": 16384, "tapered_corners": True},
        },
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "g"}},
    }
)


async def test_cancel_stops_a_node_inside_its_long_loop(
    executor: ExecutorUnderTest, store: ObjectStore
) -> None:
    job = await make_job(store, LONG_LOOP)
    updates: list[executor_pb2.ExecuteUpdate] = []
    async with asyncio.timeout(30):
        async for update in executor.stub.Execute(job.request):
            updates.append(update)
            node = update.node
            if node.state == executor_pb2.NODE_STATE_RUNNING and node.progress.node_id == "2":
                cancelled_at = time.monotonic()
                await executor.stub.Cancel(
                    executor_pb2.CancelRequest(execution_id=job.request.execution_id, attempt=1)
                )

    async def slot_free() -> None:
        status = await executor.stub.GetStatus(executor_pb2.GetStatusRequest())
        assert status.execution_id == "" and status.capacity.busy_slots == 0

    # The engine thread itself returned: GrowMask saw the cancel between two of its steps.
    await eventually(slot_free, timeout=5)
    assert time.monotonic() - cancelled_at < 5
    assert updates[-1].failed.error.code == code_pb2.CANCELLED
    done = [
        u.node.progress.node_id for u in updates if u.node.state == executor_pb2.NODE_STATE_DONE
    ]
    assert done == ["1"]
