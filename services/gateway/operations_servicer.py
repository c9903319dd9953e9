"""OperationsService: the platform's overview, for admin keys only."""

from __future__ import annotations

import grpc

from comfyfleet.operations.v1 import operations_pb2, operations_pb2_grpc
from services.gateway.auth import Authenticator
from services.gateway.operations import OperationsReader


class OperationsServicer(operations_pb2_grpc.OperationsServiceServicer):
    def __init__(self, auth: Authenticator, reader: OperationsReader) -> None:
        self.auth = auth
        self.reader = reader

    async def GetOverview(
        self, request: operations_pb2.GetOverviewRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Overview:
        principal = await self.auth.authenticate(context)
        # It shows every tenant's work: a tenant's own keys must not see it.
        principal.require("admin")
        return await self.reader.overview()
