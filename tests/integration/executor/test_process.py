"""``python -m services.executor`` as an operator runs it: env config, register, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from comfyfleet.common.grpcserver import channel
from comfyfleet.executor.v1 import executor_pb2, executor_pb2_grpc
from tests.integration.executor.conftest import SchedulerUnderTest
from tests.support.eventually import eventually
from tests.support.paths import REPO_ROOT


async def test_the_process_registers_serves_and_deregisters_on_sigterm(
    scheduler: SchedulerUnderTest, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "COMFYFLEET_GRPC_ADDR": "127.0.0.1:0",
        "COMFYFLEET_SCHEDULER_ADDR": scheduler.address,
        "COMFYFLEET_EXECUTOR_ID": "exec-process-test",
        "COMFYFLEET_EXECUTOR_DEVICE": "cpu",
        "COMFYFLEET_EXECUTOR_WORK_DIR": str(tmp_path / "work"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.executor", cwd=REPO_ROOT, env=env
    )
    recorder = scheduler.recorder
    try:

        async def registered() -> None:
            assert recorder.registrations, "not registered yet"

        await eventually(registered, timeout=60)
        address = recorder.registrations[0].address
        async with channel(address) as ch:
            stub = executor_pb2_grpc.ExecutorServiceStub(ch)
            status = await stub.GetStatus(executor_pb2.GetStatusRequest())
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert status.executor_id == "exec-process-test"
    assert code == 0
    assert recorder.deregistrations == ["exec-process-test"]
