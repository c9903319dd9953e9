"""The gRPC transport: executors that register with the scheduler and serve
``comfyfleet.executor.v1.ExecutorService`` over gRPC, on the ``local`` pool or on ECS."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import grpc
from google.rpc import code_pb2

from comfyfleet.common.errors import error_info, from_rpc_error
from comfyfleet.common.grpcserver import channel
from comfyfleet.executor.v1 import executor_pb2, executor_pb2_grpc
from services.scheduler.failures import connection_lost
from services.scheduler.providers.base import ProviderError
from services.scheduler.records import Placement

# An executor that answers the call itself with one of these says the request cannot run
# anywhere; every other status is the transport's or the executor's trouble.
_WORKFLOW_CODES = {code_pb2.INVALID_ARGUMENT, code_pb2.FAILED_PRECONDITION}


class LocalProvider:
    """Registered gRPC executors, one channel per address."""

    def __init__(self, cancel_timeout_s: float = 5.0) -> None:
        self.cancel_timeout_s = cancel_timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> executor_pb2_grpc.ExecutorServiceStub:
        if address not in self._channels:
            self._channels[address] = channel(address)
        return executor_pb2_grpc.ExecutorServiceStub(self._channels[address])

    async def execute(
        self, placement: Placement, request: executor_pb2.ExecuteRequest
    ) -> AsyncGenerator[executor_pb2.ExecuteUpdate, None]:
        call = self._stub(placement.address).Execute(request)
        received = False
        try:
            async for update in call:
                received = True
                yield update
        except grpc.aio.AioRpcError as err:
            status = from_rpc_error(err).status
            if received and error_info(status) is None:
                # Not the executor's answer (it always sends ErrorInfo) but the transport's:
                # the process died or its machine went away mid-run.
                status = connection_lost(placement.executor_id, status)
            raise ProviderError(
                status,
                workflow_error=status.code in _WORKFLOW_CODES,
                unreachable=not received and err.code() == grpc.StatusCode.UNAVAILABLE,
            ) from err
        finally:
            call.cancel()

    async def cancel(self, placement: Placement, execution_id: str, attempt: int) -> bool:
        request = executor_pb2.CancelRequest(execution_id=execution_id, attempt=attempt)
        try:
            response = await self._stub(placement.address).Cancel(
                request, timeout=self.cancel_timeout_s
            )
        except grpc.aio.AioRpcError as err:
            raise ProviderError(from_rpc_error(err).status) from err
        return bool(response.found)

    async def aclose(self) -> None:
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            await ch.close()
