"""Serverless executors: a job limit, an idle limit, and a warmup before any work is taken."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from comfyfleet.common.errors import error_info
from comfyfleet.common.grpcserver import channel
from comfyfleet.common.storage import ObjectStore
from comfyfleet.executor.v1 import executor_pb2_grpc
from services.executor.config import Config
from services.executor.engine import Engine
from services.executor.server import running_executor
from services.executor.serverless import WarmupFailed
from tests.integration.executor.conftest import (
    GatedEngine,
    SchedulerUnderTest,
    StartExecutor,
    collect,
    make_job,
    workflow_text,
)
from tests.support.eventually import eventually
from tests.support.paths import REPO_ROOT, comfyui_ref


async def test_past_its_job_limit_the_executor_refuses_work_and_finishes(
    start_executor: StartExecutor, store: ObjectStore
) -> None:
    async with start_executor(max_jobs=1) as ex:
        first = await collect(ex.stub, (await make_job(store, workflow_text("a_tiny"))).request)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await collect(ex.stub, (await make_job(store, workflow_text("a_tiny"))).request)
        reason = await asyncio.wait_for(ex.running.watch.finished(), 10)

    assert first[-1].WhichOneof("update") == "completed"
    status = rpc_status.from_call(refused.value)
    assert status is not None and status.code == code_pb2.UNAVAILABLE
    info = error_info(status)
    assert info is not None and info.reason == "EXECUTOR_DRAINING"
    assert reason == "ran its 1 jobs"


async def test_an_idle_executor_finishes_after_its_idle_time(
    start_executor: StartExecutor, store: ObjectStore
) -> None:
    async with start_executor(idle_exit_s=0.5) as ex:
        await collect(ex.stub, (await make_job(store, workflow_text("a_tiny"))).request)
        idle_after_job = ex.running.watch.idle_for()
        reason = await asyncio.wait_for(ex.running.watch.finished(), 10)

    assert idle_after_job < 0.5
    assert reason == "idle for 0.5s"


async def test_without_limits_the_executor_never_finishes_on_its_own(
    start_executor: StartExecutor, store: ObjectStore
) -> None:
    async with start_executor() as ex:
        await collect(ex.stub, (await make_job(store, workflow_text("a_tiny"))).request)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ex.running.watch.finished(), 0.3)


async def _health(port: int) -> int:
    async with channel(f"127.0.0.1:{port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        return int(reply.status)


async def test_the_executor_serves_and_registers_only_after_its_warmup(
    executor_config: Config, native_engine: Engine, scheduler: SchedulerUnderTest
) -> None:
    gated = GatedEngine(native_engine, "2")
    cfg = Config(**{**vars(executor_config), "warmup_workflow": workflow_text("a_tiny")})
    entered = asyncio.Event()
    leave = asyncio.Event()
    ports: list[int] = []

    async def run() -> None:
        async with running_executor(cfg, gated) as running:
            ports.append(running.port)
            entered.set()
            await leave.wait()

    task = asyncio.create_task(run())
    try:
        await asyncio.to_thread(gated.held.wait, 30)
        assert gated.held.is_set(), "the warmup never reached node 2"
        assert not entered.is_set()
        assert scheduler.recorder.registrations == []
        gated.gate.set()
        await asyncio.wait_for(entered.wait(), 30)
        serving = await _health(ports[0])

        async def registered() -> None:
            assert scheduler.recorder.registrations, "not registered yet"

        await eventually(registered)
    finally:
        gated.gate.set()
        leave.set()
        await task

    assert serving == health_pb2.HealthCheckResponse.SERVING


async def test_a_failed_warmup_raises_before_serving_or_registering(
    executor_config: Config, native_engine: Engine, scheduler: SchedulerUnderTest
) -> None:
    cfg = Config(
        **{**vars(executor_config), "warmup_workflow": workflow_text("invalid_unknown_class")}
    )

    with pytest.raises(WarmupFailed, match="NoSuchNodeXYZ"):
        async with running_executor(cfg, native_engine):
            pass

    assert scheduler.recorder.registrations == []


def _env(scheduler: SchedulerUnderTest, work: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "COMFYFLEET_GRPC_ADDR": "127.0.0.1:0",
        "COMFYFLEET_SCHEDULER_ADDR": scheduler.address,
        "COMFYFLEET_EXECUTOR_DEVICE": "cpu",
        "COMFYFLEET_EXECUTOR_WORK_DIR": str(work),
        **{f"COMFYFLEET_EXECUTOR_{k.upper()}": v for k, v in extra.items()},
    }


@contextlib.asynccontextmanager
async def _process(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.executor",
        cwd=REPO_ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()


async def test_a_serverless_process_warms_up_runs_its_jobs_and_leaves(
    scheduler: SchedulerUnderTest, store: ObjectStore, tmp_path: Path
) -> None:
    env = _env(
        scheduler,
        tmp_path / "work",
        id="exec-serverless",
        max_jobs="1",
        warmup_workflow=str(comfyui_ref() / "workflows/a_tiny.json"),
    )
    recorder = scheduler.recorder
    async with _process(env) as process:

        async def registered() -> None:
            assert recorder.registrations, "not registered yet"

        await eventually(registered, timeout=60)
        job = await make_job(store, workflow_text("a_tiny"))
        async with channel(recorder.registrations[0].address) as ch:
            stub = executor_pb2_grpc.ExecutorServiceStub(ch)
            updates = await collect(stub, job.request)
        code = await asyncio.wait_for(process.wait(), 30)
        assert process.stderr is not None
        logs = (await process.stderr.read()).decode()

    # The warmup ran the same workflow: the job takes its nodes from the node cache, but its
    # output node saves the job's own file (issue 11: files embed their own run's prompt).
    assert sorted(updates[-1].completed.cached_nodes) == ["1", "2"]
    assert len(updates[-1].completed.outputs) == 1
    assert code == 0, logs
    assert "warmup workflow ran in" in logs
    assert "stopping after ran its 1 jobs" in logs
    assert recorder.deregistrations == ["exec-serverless"]


async def test_a_process_whose_warmup_fails_exits_non_zero_without_registering(
    scheduler: SchedulerUnderTest, tmp_path: Path
) -> None:
    env = _env(
        scheduler,
        tmp_path / "work",
        warmup_workflow='{"1": {"class_type": "NoSuchNode", "inputs": {}}}',
    )
    async with _process(env) as process:
        code = await asyncio.wait_for(process.wait(), 60)
        assert process.stderr is not None
        logs = (await process.stderr.read()).decode()

    assert code == 1
    assert "executor not started: the warmup workflow failed" in logs
    assert "NoSuchNode" in logs
    assert scheduler.recorder.registrations == []
