"""A small real ExecutorService for the scheduler's tests: each attempt follows a script.

It speaks the executor protocol over gRPC like the real one: downloads its inputs from the
presigned GET URLs, uploads outputs with PUT to the presigned slots, streams updates, and
honours Cancel. Scripts make it succeed, fail (retryable or not), hang, die or go quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import grpc
from google.rpc import code_pb2, status_pb2

from comfyfleet.common.grpcserver import RunningServer, channel, registration, serve
from comfyfleet.executions.v1 import executions_pb2
from comfyfleet.executor.v1 import executor_pb2, executor_pb2_grpc
from comfyfleet.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc


@dataclass(frozen=True)
class Script:
    """What the executor does with one attempt.

    kind: "succeed" uploads ``outputs`` and completes; "fail" reports a failure; "hang" starts
    and waits until cancelled; "die" starts and breaks the stream; "end" closes the stream
    without a result.
    """

    kind: str
    outputs: tuple[tuple[str, str, bytes], ...] = ()
    retryable: bool = False
    message: str = "boom"
    steps: int = 2
    # Wait for the executor's gate to open before finishing.
    gated: bool = False


def succeed(*outputs: tuple[str, str, bytes], steps: int = 2, gated: bool = False) -> Script:
    return Script("succeed", outputs=outputs, steps=steps, gated=gated)


def fail(*, retryable: bool, message: str = "boom") -> Script:
    return Script("fail", retryable=retryable, message=message)


HANG = Script("hang")
DIE = Script("die")
END = Script("end")


@dataclass
class ScriptedExecutor(executor_pb2_grpc.ExecutorServiceServicer):
    """Plays ``scripts`` in order, one per attempt; the last one repeats."""

    executor_id: str
    scripts: list[Script]
    calls: list[executor_pb2.ExecuteRequest] = field(default_factory=list)
    cancels: list[tuple[str, int]] = field(default_factory=list)
    inputs_seen: dict[str, bytes] = field(default_factory=dict)
    running: set[tuple[str, int]] = field(default_factory=set)
    max_running: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    _cancelled: dict[tuple[str, int], asyncio.Event] = field(default_factory=dict)

    def _next_script(self) -> Script:
        return self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]

    async def Execute(
        self, request: executor_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_pb2.ExecuteUpdate]:
        key = (request.execution_id, request.attempt)
        self.calls.append(request)
        self.running.add(key)
        self.max_running = max(self.max_running, len(self.running))
        cancelled = self._cancelled.setdefault(key, asyncio.Event())
        try:
            async for update in self._play(self._next_script(), request, context, cancelled):
                yield update
        finally:
            self.running.discard(key)

    async def _play(
        self,
        script: Script,
        request: executor_pb2.ExecuteRequest,
        context: grpc.aio.ServicerContext,
        cancelled: asyncio.Event,
    ) -> AsyncIterator[executor_pb2.ExecuteUpdate]:
        yield executor_pb2.ExecuteUpdate(
            started=executor_pb2.Started(executor_id=self.executor_id, device="cpu")
        )
        if script.kind == "hang":
            await cancelled.wait()
            yield _failed(code_pb2.CANCELLED, "cancelled", retryable=False)
            return
        if script.kind == "die":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "executor crashed")
        if script.kind == "end":
            return
        for step in range(1, script.steps + 1):
            yield _progress("1", step, script.steps)
        if script.kind == "fail":
            code = code_pb2.UNAVAILABLE if script.retryable else code_pb2.INVALID_ARGUMENT
            yield _failed(code, script.message, retryable=script.retryable)
            return
        if script.gated:
            await self.gate.wait()
        await self._download_inputs(request)
        yield await self._upload_outputs(request, script)

    async def _download_inputs(self, request: executor_pb2.ExecuteRequest) -> None:
        async with aiohttp.ClientSession() as http:
            for ref in request.inputs:
                async with http.get(ref.url) as response:
                    response.raise_for_status()
                    self.inputs_seen[ref.name] = await response.read()

    async def _upload_outputs(
        self, request: executor_pb2.ExecuteRequest, script: Script
    ) -> executor_pb2.ExecuteUpdate:
        uploaded = []
        async with aiohttp.ClientSession() as http:
            for slot, (node_id, filename, data) in zip(
                request.output_slots, script.outputs, strict=False
            ):
                async with http.put(slot.url, data=data) as response:
                    response.raise_for_status()
                uploaded.append(
                    executor_pb2.UploadedOutput(
                        slot=slot.index,
                        output=executions_pb2.Output(
                            node_id=node_id,
                            filename=filename,
                            kind="images",
                            content_type="image/png",
                            size_bytes=len(data),
                            sha256=hashlib.sha256(data).hexdigest(),
                        ),
                    )
                )
        metrics = executions_pb2.ExecutionMetrics(
            execution_time_seconds=1.5, memory_used_bytes=4096
        )
        return executor_pb2.ExecuteUpdate(
            completed=executor_pb2.Completed(outputs=uploaded, metrics=metrics)
        )

    async def Cancel(
        self, request: executor_pb2.CancelRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.CancelResponse:
        key = (request.execution_id, request.attempt)
        self.cancels.append(key)
        event = self._cancelled.setdefault(key, asyncio.Event())
        event.set()
        return executor_pb2.CancelResponse(found=key in self.running)

    async def GetStatus(
        self, request: executor_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.ExecutorStatus:
        return executor_pb2.ExecutorStatus(executor_id=self.executor_id)

    def attempts(self) -> list[tuple[str, int]]:
        return [(c.execution_id, c.attempt) for c in self.calls]


def _progress(node_id: str, value: int, steps: int) -> executor_pb2.ExecuteUpdate:
    progress = executions_pb2.NodeProgress(
        node_id=node_id, class_type="KSampler", value=value, max=steps, nodes_done=0, nodes_total=1
    )
    return executor_pb2.ExecuteUpdate(
        node=executor_pb2.NodeUpdate(state=executor_pb2.NODE_STATE_PROGRESS, progress=progress)
    )


def _failed(code: int, message: str, *, retryable: bool) -> executor_pb2.ExecuteUpdate:
    return executor_pb2.ExecuteUpdate(
        failed=executor_pb2.Failed(
            error=status_pb2.Status(code=code, message=message), retryable=retryable
        )
    )


@dataclass
class RunningExecutor:
    """A scripted executor serving, registered with a scheduler and heartbeating."""

    servicer: ScriptedExecutor
    server: RunningServer
    slots: int = 1
    heartbeat_s: float = 0.1
    heartbeats: asyncio.Task[None] | None = None
    capacity: scheduler_pb2.ExecutorCapacity = field(default_factory=scheduler_pb2.ExecutorCapacity)

    @property
    def id(self) -> str:
        return self.servicer.executor_id

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stop_heartbeats(self) -> None:
        """As if the executor's host froze: the scheduler hears nothing more from it."""
        if self.heartbeats is not None:
            self.heartbeats.cancel()
            self.heartbeats = None

    def heartbeat_to(self, scheduler_address: str) -> None:
        """Heartbeats to this scheduler replica from now on."""
        self.stop_heartbeats()
        self.heartbeats = asyncio.create_task(_heartbeat(scheduler_address, self, self.heartbeat_s))


async def _heartbeat(address: str, executor: RunningExecutor, every_s: float) -> None:
    async with channel(address) as ch:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(ch)
        while True:
            try:
                response = await stub.Heartbeat(
                    scheduler_pb2.HeartbeatRequest(
                        executor_id=executor.id, capacity=executor.capacity
                    )
                )
            except grpc.aio.AioRpcError:
                pass  # the scheduler is away; keep trying, as a real executor does
            else:
                if response.reregister:
                    return
            await asyncio.sleep(every_s)


@contextlib.asynccontextmanager
async def scripted_executor(
    scheduler_address: str,
    executor_id: str,
    *scripts: Script,
    slots: int = 1,
    heartbeat_s: float = 0.1,
    node_types: tuple[str, ...] = (),
    provider: str = "local",
    cached_models: tuple[str, ...] = (),
    free_memory_bytes: int = 0,
    environment: str = "",
    engine: str = "native",
    object_info_json: str = "",
) -> AsyncIterator[RunningExecutor]:
    """Serves a scripted executor, registers it with the scheduler and heartbeats; with an
    ``environment`` (and its engine's catalog) as a real executor of it registers."""
    servicer = ScriptedExecutor(executor_id, list(scripts) or [succeed()])
    reg = registration(servicer, executor_pb2_grpc, "ExecutorService")
    capacity = scheduler_pb2.ExecutorCapacity(
        slots=slots,
        cached_models=cached_models,
        gpu=scheduler_pb2.GpuInfo(name="test GPU", free_memory_bytes=free_memory_bytes),
    )
    async with serve("127.0.0.1:0", [reg], grace=0.1) as server:
        executor = RunningExecutor(servicer, server, slots, heartbeat_s, capacity=capacity)
        async with channel(scheduler_address) as ch:
            await scheduler_pb2_grpc.SchedulerServiceStub(ch).RegisterExecutor(
                scheduler_pb2.RegisterExecutorRequest(
                    executor=scheduler_pb2.Executor(
                        id=executor_id,
                        address=executor.address,
                        provider=provider,
                        engine=engine,
                        node_types=node_types,
                        capacity=capacity,
                        environment=environment,
                    ),
                    object_info_json=object_info_json,
                )
            )
        executor.heartbeat_to(scheduler_address)
        try:
            yield executor
        finally:
            executor.stop_heartbeats()
