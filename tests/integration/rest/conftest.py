"""A real gRPC server with the test servicers, and the REST front in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from comfyfleet.common.grpcserver import registration, serve
from comfyfleet.executions.v1 import executions_pb2_grpc
from comfyfleet.models.v1 import models_pb2_grpc
from comfyfleet.tenants.v1 import tenants_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2_grpc
from services.gateway.rest import RestOptions, build_rest_app, serve_rest
from tests.integration.rest.servicers import Executions, Models, Recorder, Tenants, Webhooks

PUBLIC_SERVICES = [
    "comfyfleet.executions.v1.ExecutionService",
    "comfyfleet.tenants.v1.TenantService",
    "comfyfleet.webhooks.v1.WebhookService",
    "comfyfleet.models.v1.ModelService",
]


@dataclass
class Stack:
    grpc_target: str
    url: str
    recorder: Recorder


@pytest.fixture(scope="module")
async def grpc_backend() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    registrations = [
        registration(Executions(recorder), executions_pb2_grpc, "ExecutionService"),
        registration(Tenants(recorder), tenants_pb2_grpc, "TenantService"),
        registration(Webhooks(recorder), webhooks_pb2_grpc, "WebhookService"),
        registration(Models(recorder), models_pb2_grpc, "ModelService"),
    ]
    async with serve("127.0.0.1:0", registrations, grace=0.5) as server:
        yield f"127.0.0.1:{server.port}", recorder


@pytest.fixture(scope="module")
async def stack(grpc_backend: tuple[str, Recorder]) -> AsyncIterator[Stack]:
    target, recorder = grpc_backend
    # A short keepalive so the SSE tests see one without waiting long.
    app = build_rest_app(target, PUBLIC_SERVICES, options=RestOptions(sse_keepalive_s=0.3))
    async with serve_rest("127.0.0.1:0", app) as rest:
        yield Stack(target, rest.url, recorder)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    stack.recorder.reset()
    async with aiohttp.ClientSession(base_url=stack.url) as session:
        yield session
