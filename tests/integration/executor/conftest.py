"""A real executor gRPC server, a real S3 server, and a small real SchedulerService.

The scheduler here only records what executors tell it (the real one is tested on its own);
URLs are presigned with ObjectStore exactly as the scheduler presigns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from comfyfleet.common.config import S3Config
from comfyfleet.common.grpcserver import RunningServer, channel, registration, serve
from comfyfleet.common.storage import ObjectStore, input_key, output_key
from comfyfleet.executor.v1 import executor_pb2, executor_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from comfyfleet.workflow.runner import CancelToken
from services.executor.config import Config
from services.executor.engine import (
    Engine,
    EngineJob,
    EngineResult,
    NodeEvent,
    NodeState,
    build_engine,
)
from services.executor.server import RunningExecutor, running_executor
from tests.support.infra import S3Info
from tests.support.paths import comfyui_ref

TENANT = "t-executor"
URL_TTL_S = 600.0
STREAM_TIMEOUT_S = 30.0


class RecordingScheduler(scheduler_pb2_grpc.SchedulerServiceServicer):
    """Remembers registrations, heartbeats and deregistrations; can forget an executor."""

    def __init__(self, heartbeat_interval_s: float = 0.1) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.registrations: list[scheduler_pb2.Executor] = []
        self.heartbeats: list[scheduler_pb2.HeartbeatRequest] = []
        self.deregistrations: list[str] = []
        self.known: set[str] = set()

    async def RegisterExecutor(
        self, request: scheduler_pb2.RegisterExecutorRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.RegisterExecutorResponse:
        self.registrations.append(request.executor)
        self.known.add(request.executor.id)
        return scheduler_pb2.RegisterExecutorResponse(
            heartbeat_interval_seconds=self.heartbeat_interval_s
        )

    async def Heartbeat(
        self, request: scheduler_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.HeartbeatResponse:
        self.heartbeats.append(request)
        return scheduler_pb2.HeartbeatResponse(reregister=request.executor_id not in self.known)

    async def DeregisterExecutor(
        self, request: scheduler_pb2.DeregisterExecutorRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.DeregisterExecutorResponse:
        self.deregistrations.append(request.executor_id)
        self.known.discard(request.executor_id)
        return scheduler_pb2.DeregisterExecutorResponse()


@dataclass
class SchedulerUnderTest:
    recorder: RecordingScheduler
    server: RunningServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture
async def scheduler() -> AsyncIterator[SchedulerUnderTest]:
    recorder = RecordingScheduler()
    reg = registration(recorder, scheduler_pb2_grpc, "SchedulerService")
    async with serve("127.0.0.1:0", [reg], grace=0.1) as server:
        yield SchedulerUnderTest(recorder, server)


class GatedEngine:
    """The real engine, held at the start of one node until the test opens the gate.

    While held it watches the run's cancel token, so a cancel lets the node go and the
    engine stops at its next check, as it would in a long node.
    """

    def __init__(self, inner: Engine, node_id: str) -> None:
        self.inner = inner
        self.node_id = node_id
        self.gate = threading.Event()
        self.held = threading.Event()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def device(self) -> str:
        return self.inner.device

    def node_types(self) -> Sequence[str]:
        return self.inner.node_types()

    def run(
        self, job: EngineJob, on_event: Callable[[NodeEvent], None], cancel: CancelToken
    ) -> EngineResult:
        def hold(event: NodeEvent) -> None:
            on_event(event)
            if event.state == NodeState.RUNNING and event.node_id == self.node_id:
                self.held.set()
                while not (self.gate.is_set() or cancel.cancelled):
                    self.gate.wait(0.01)

        return self.inner.run(job, hold, cancel)


@pytest.fixture
def executor_config(tmp_path: Path, scheduler: SchedulerUnderTest) -> Config:
    return Config(
        grpc_addr="127.0.0.1:0",
        scheduler_addr=scheduler.address,
        executor_id=f"exec-{uuid.uuid4().hex[:8]}",
        device="cpu",
        work_dir=tmp_path / "executor",
        shutdown_grace_s=5.0,
        cancel_grace_s=5.0,
        register_retry_s=0.1,
    )


@pytest.fixture
def native_engine(tmp_path: Path) -> Engine:
    return build_engine("native", "cpu", tmp_path / "engine")


@dataclass
class ExecutorUnderTest:
    running: RunningExecutor
    stub: executor_pb2_grpc.ExecutorServiceStub


StartExecutor = Callable[..., contextlib.AbstractAsyncContextManager[ExecutorUnderTest]]


@contextlib.asynccontextmanager
async def _started(cfg: Config, engine: Engine) -> AsyncIterator[ExecutorUnderTest]:
    channels: list[grpc.aio.Channel] = []
    try:
        async with running_executor(cfg, engine) as running:
            channels.append(channel(f"127.0.0.1:{running.port}"))
            yield ExecutorUnderTest(running, executor_pb2_grpc.ExecutorServiceStub(channels[0]))
    finally:
        # Closed after the executor stopped, so streams outlive its drain.
        for ch in channels:
            await ch.close()


@pytest.fixture
def start_executor(executor_config: Config, native_engine: Engine) -> StartExecutor:
    """``async with start_executor(engine=..., **config changes) as ex:`` its own executor."""

    def start(
        engine: Engine | None = None, **changes: Any
    ) -> contextlib.AbstractAsyncContextManager[ExecutorUnderTest]:
        return _started(replace(executor_config, **changes), engine or native_engine)

    return start


@pytest.fixture
async def executor(start_executor: StartExecutor) -> AsyncIterator[ExecutorUnderTest]:
    async with start_executor() as running:
        yield running


@pytest.fixture
def store(s3_server: S3Info, s3_bucket: str) -> ObjectStore:
    cfg = S3Config(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
        bucket=s3_bucket,
    )
    return ObjectStore.from_config(cfg)


def workflow_text(name: str) -> str:
    return (comfyui_ref() / "workflows" / f"{name}.json").read_text()


def input_bytes(name: str) -> bytes:
    return (comfyui_ref() / "inputs" / name).read_bytes()


@dataclass
class Job:
    """An execution as the scheduler would dispatch it, with the keys its URLs point at."""

    request: executor_pb2.ExecuteRequest
    output_keys: list[str]


async def make_job(
    store: ObjectStore,
    workflow_json: str,
    *,
    inputs: dict[str, bytes] | None = None,
    slots: int = 4,
    attempt: int = 1,
    run_timeout_s: float | None = None,
    execution_id: str | None = None,
) -> Job:
    """Uploads the inputs and presigns their GET URLs and ``slots`` output PUT URLs."""
    execution_id = execution_id or f"exe-{uuid.uuid4().hex[:12]}"
    refs = []
    for name, data in (inputs or {}).items():
        key = input_key(TENANT, execution_id, name)
        await store.put(key, data, "application/octet-stream")
        url = store.presign_get(key, URL_TTL_S)
        refs.append(executor_pb2.InputRef(name=name, url=url, size_bytes=len(data)))
    keys = [output_key(TENANT, execution_id, attempt, i) for i in range(slots)]
    request = executor_pb2.ExecuteRequest(
        execution_id=execution_id,
        attempt=attempt,
        tenant=TENANT,
        workflow_json=workflow_json,
        inputs=refs,
        output_slots=[
            executor_pb2.OutputSlot(index=i, url=store.presign_put(k, URL_TTL_S))
            for i, k in enumerate(keys)
        ],
    )
    if run_timeout_s is not None:
        request.run_timeout.FromTimedelta(timedelta(seconds=run_timeout_s))
    return Job(request, keys)


async def collect(
    stub: executor_pb2_grpc.ExecutorServiceStub, request: executor_pb2.ExecuteRequest
) -> list[executor_pb2.ExecuteUpdate]:
    """Every update of one Execute call; a hung stream fails the test instead of the suite."""
    async with asyncio.timeout(STREAM_TIMEOUT_S):
        return [update async for update in stub.Execute(request)]
