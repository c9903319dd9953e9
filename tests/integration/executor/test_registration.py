"""The executor registers with the scheduler, heartbeats, registers again, deregisters."""

from __future__ import annotations

import socket

from comfyfleet.common.grpcserver import registration, serve
from comfyfleet.scheduler.v1 import scheduler_pb2_grpc
from tests.integration.executor.conftest import (
    RecordingScheduler,
    SchedulerUnderTest,
    StartExecutor,
)
from tests.support.eventually import eventually


async def test_registers_heartbeats_and_deregisters_on_stop(
    start_executor: StartExecutor, scheduler: SchedulerUnderTest
) -> None:
    recorder = scheduler.recorder
    async with start_executor(provider="ecs") as ex:
        me = ex.running.identity

        async def heartbeating() -> None:
            assert len(recorder.registrations) == 1
            assert len(recorder.heartbeats) >= 2

        await eventually(heartbeating)
        assert recorder.deregistrations == []

    registered = recorder.registrations[0]
    assert registered.id == me.executor_id
    assert registered.address == f"127.0.0.1:{ex.running.port}"
    assert (registered.provider, registered.engine) == ("ecs", "native")
    assert {"LoadImage", "ImageInvert", "SaveImage"} <= set(registered.node_types)
    assert registered.capacity.gpu.name == "cpu"
    assert (registered.capacity.slots, registered.capacity.busy_slots) == (1, 0)
    assert {h.executor_id for h in recorder.heartbeats} == {me.executor_id}
    assert recorder.heartbeats[-1].capacity.gpu.total_memory_bytes > 0
    assert recorder.deregistrations == [me.executor_id]


async def test_registers_again_when_the_scheduler_forgot_it(
    start_executor: StartExecutor, scheduler: SchedulerUnderTest
) -> None:
    recorder = scheduler.recorder
    async with start_executor() as ex:

        async def registered(times: int) -> None:
            assert len(recorder.registrations) == times

        await eventually(lambda: registered(1))
        recorder.known.discard(ex.running.identity.executor_id)  # as after a scheduler restart
        await eventually(lambda: registered(2))
        assert ex.running.identity.executor_id in recorder.known


async def test_registers_once_an_unreachable_scheduler_comes_up(
    start_executor: StartExecutor,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    recorder = RecordingScheduler()
    async with start_executor(scheduler_addr=f"127.0.0.1:{port}") as ex:
        assert ex.running.registrar is not None and not ex.running.registrar.registered
        reg = registration(recorder, scheduler_pb2_grpc, "SchedulerService")
        async with serve(f"127.0.0.1:{port}", [reg], grace=0.1):

            async def registered() -> None:
                assert [r.id for r in recorder.registrations] == [ex.running.identity.executor_id]
                assert recorder.heartbeats

            await eventually(registered)


async def test_a_standalone_executor_registers_nowhere(
    start_executor: StartExecutor, scheduler: SchedulerUnderTest
) -> None:
    async with start_executor(register=False) as ex:
        assert ex.running.registrar is None
    assert scheduler.recorder.registrations == []
    assert scheduler.recorder.deregistrations == []
