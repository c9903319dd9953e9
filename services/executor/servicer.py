"""ExecutorService: proto in, domain calls, proto out; errors raised as our typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from comfyfleet.executor.v1 import executor_pb2, executor_pb2_grpc
from services.executor.convert import attempt_spec, status_proto, update_proto
from services.executor.worker import Worker


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def Execute(
        self, request: executor_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_pb2.ExecuteUpdate]:
        attempt = self.worker.start(attempt_spec(request))
        async for update in attempt.updates():
            yield update_proto(update)

    async def Cancel(
        self, request: executor_pb2.CancelRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.CancelResponse:
        found = self.worker.cancel(request.execution_id, request.attempt)
        return executor_pb2.CancelResponse(found=found)

    async def GetStatus(
        self, request: executor_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.ExecutorStatus:
        return status_proto(self.worker.status())
