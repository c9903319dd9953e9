"""The interface every provider implements: run one attempt, and interrupt one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Protocol

from google.rpc import status_pb2

from comfyfleet.common.errors import Unavailable
from comfyfleet.executor.v1 import executor_pb2
from services.scheduler.records import Placement


class ProviderError(Exception):
    """Running an attempt failed before the executor could report a result.

    ``workflow_error`` is True when the executor rejected the request itself (the workflow
    cannot run anywhere); otherwise the failure is the infrastructure's and may be retried.
    ``unreachable`` is True when the executor could not be reached at all.
    """

    def __init__(
        self,
        status: status_pb2.Status,
        *,
        workflow_error: bool = False,
        unreachable: bool = False,
    ) -> None:
        super().__init__(status.message)
        self.status = status
        self.workflow_error = workflow_error
        self.unreachable = unreachable


class Provider(Protocol):
    """One way of running attempts: registered gRPC executors, or a RunPod endpoint."""

    def execute(
        self, placement: Placement, request: executor_pb2.ExecuteRequest
    ) -> AsyncGenerator[executor_pb2.ExecuteUpdate, None]:
        """Starts the attempt and yields its updates; raises ProviderError when the transport
        fails. Closing the iterator abandons the attempt's stream."""
        ...

    async def cancel(self, placement: Placement, execution_id: str, attempt: int) -> bool:
        """Asks the executor to interrupt the attempt; True when it was running there."""
        ...

    async def aclose(self) -> None:
        """Releases connections."""
        ...


class Providers:
    """The transports the scheduler can reach executors by, chosen by each placement's
    ``transport``: registered gRPC executors (local and ECS) and RunPod endpoints."""

    def __init__(self, transports: Mapping[str, Provider]) -> None:
        self._transports = dict(transports)

    def of(self, placement: Placement) -> Provider:
        found = self._transports.get(placement.transport)
        if found is None:
            raise ProviderError(
                Unavailable(
                    f"this scheduler cannot reach {placement.transport} executors",
                    reason="TRANSPORT_NOT_CONFIGURED",
                ).to_status()
            )
        return found

    async def aclose(self) -> None:
        for provider in self._transports.values():
            await provider.aclose()
