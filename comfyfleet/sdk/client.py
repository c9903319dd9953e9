"""Clients of the public gRPC API."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc

from comfyfleet.executions.v1 import executions_pb2, executions_pb2_grpc
from comfyfleet.sdk.errors import api_error
from comfyfleet.sdk.settings import Settings
from comfyfleet.tenants.v1 import tenants_pb2, tenants_pb2_grpc
from comfyfleet.webhooks.v1 import webhooks_pb2_grpc

TERMINAL = frozenset(
    {
        executions_pb2.EXECUTION_STATE_SUCCEEDED,
        executions_pb2.EXECUTION_STATE_FAILED,
        executions_pb2.EXECUTION_STATE_CANCELLED,
    }
)
_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
Inputs = Mapping[str, bytes | Path]


def create_request(
    workflow: Mapping[str, Any] | str,
    inputs: Inputs | None = None,
    *,
    priority: int = 0,
    labels: Mapping[str, str] | None = None,
    request_id: str = "",
) -> executions_pb2.CreateExecutionRequest:
    """A CreateExecutionRequest; the workflow travels as JSON text so large ints survive."""
    text = workflow if isinstance(workflow, str) else json.dumps(workflow)
    files = []
    for name, data in (inputs or {}).items():
        content = data.read_bytes() if isinstance(data, Path) else data
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        files.append(executions_pb2.InputFile(name=name, content=content, content_type=kind))
    return executions_pb2.CreateExecutionRequest(
        workflow_json=text,
        inputs=files,
        priority=priority,
        labels=dict(labels or {}),
        request_id=request_id,
    )


def download(url: str, dest: Path) -> Path:
    """Fetches a presigned URL to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    return dest


def output_path(out_dir: Path, output: executions_pb2.Output) -> Path:
    name = Path(output.filename).name or f"node{output.node_id}.bin"
    return out_dir / output.subfolder / name if output.subfolder else out_dir / name


class AsyncClient:
    """asyncio client: ``async with AsyncClient() as c: e = await c.submit(wf)``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.discover()
        self.channel = grpc.aio.insecure_channel(self.settings.address, options=_OPTIONS)
        self.executions = executions_pb2_grpc.ExecutionServiceStub(self.channel)
        self.tenants = tenants_pb2_grpc.TenantServiceStub(self.channel)
        self.webhooks = webhooks_pb2_grpc.WebhookServiceStub(self.channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self.settings.metadata())
        except grpc.aio.AioRpcError as err:
            raise api_error(err) from None

    async def submit(
        self, workflow: Mapping[str, Any] | str, inputs: Inputs | None = None, **kw: Any
    ) -> executions_pb2.Execution:
        return await self._call(
            self.executions.CreateExecution, create_request(workflow, inputs, **kw)
        )

    async def get(self, execution_id: str) -> executions_pb2.Execution:
        return await self._call(
            self.executions.GetExecution, executions_pb2.GetExecutionRequest(id=execution_id)
        )

    async def cancel(self, execution_id: str) -> executions_pb2.Execution:
        return await self._call(
            self.executions.CancelExecution, executions_pb2.CancelExecutionRequest(id=execution_id)
        )

    async def list_executions(
        self, *, page_size: int = 50, page_token: str = ""
    ) -> executions_pb2.ListExecutionsResponse:
        request = executions_pb2.ListExecutionsRequest(page_size=page_size, page_token=page_token)
        return await self._call(self.executions.ListExecutions, request)

    async def watch(
        self, execution_id: str, after_sequence: int = 0
    ) -> AsyncIterator[executions_pb2.WorkflowExecutionEvent]:
        request = executions_pb2.WatchExecutionRequest(
            id=execution_id, after_sequence=after_sequence
        )
        stream = self.executions.WatchExecution(request, metadata=self.settings.metadata())
        try:
            async for event in stream:
                yield event
        except grpc.aio.AioRpcError as err:
            raise api_error(err) from None

    async def wait(self, execution_id: str) -> executions_pb2.Execution:
        """Follows the execution's events until it ends, then returns it."""
        async for event in self.watch(execution_id):
            if event.status in TERMINAL:
                break
        return await self.get(execution_id)

    async def download_outputs(
        self, execution: executions_pb2.Execution, out_dir: Path
    ) -> list[Path]:
        return [
            await asyncio.to_thread(download, o.url, output_path(out_dir, o))
            for o in execution.outputs
        ]


class Client:
    """Blocking client with the same methods as :class:`AsyncClient`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.discover()
        self.channel = grpc.insecure_channel(self.settings.address, options=_OPTIONS)
        self.executions = executions_pb2_grpc.ExecutionServiceStub(self.channel)
        self.tenants = tenants_pb2_grpc.TenantServiceStub(self.channel)
        self.webhooks = webhooks_pb2_grpc.WebhookServiceStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self.settings.metadata())
        except grpc.RpcError as err:
            raise api_error(err) from None

    def submit(
        self, workflow: Mapping[str, Any] | str, inputs: Inputs | None = None, **kw: Any
    ) -> executions_pb2.Execution:
        return self._call(self.executions.CreateExecution, create_request(workflow, inputs, **kw))

    def get(self, execution_id: str) -> executions_pb2.Execution:
        return self._call(
            self.executions.GetExecution, executions_pb2.GetExecutionRequest(id=execution_id)
        )

    def cancel(self, execution_id: str) -> executions_pb2.Execution:
        return self._call(
            self.executions.CancelExecution, executions_pb2.CancelExecutionRequest(id=execution_id)
        )

    def list_executions(
        self, *, page_size: int = 50, page_token: str = ""
    ) -> executions_pb2.ListExecutionsResponse:
        request = executions_pb2.ListExecutionsRequest(page_size=page_size, page_token=page_token)
        return self._call(self.executions.ListExecutions, request)

    def watch(
        self, execution_id: str, after_sequence: int = 0
    ) -> Iterator[executions_pb2.WorkflowExecutionEvent]:
        request = executions_pb2.WatchExecutionRequest(
            id=execution_id, after_sequence=after_sequence
        )
        try:
            yield from self.executions.WatchExecution(request, metadata=self.settings.metadata())
        except grpc.RpcError as err:
            raise api_error(err) from None

    def wait(self, execution_id: str) -> executions_pb2.Execution:
        for event in self.watch(execution_id):
            if event.status in TERMINAL:
                break
        return self.get(execution_id)

    def download_outputs(self, execution: executions_pb2.Execution, out_dir: Path) -> list[Path]:
        return [download(o.url, output_path(out_dir, o)) for o in execution.outputs]

    def find_or_create_tenant(self, name: str) -> tenants_pb2.Tenant:
        token = ""
        while True:
            page = self._call(
                self.tenants.ListTenants,
                tenants_pb2.ListTenantsRequest(page_size=500, page_token=token),
            )
            for tenant in page.tenants:
                if tenant.name == name:
                    return tenant
            token = page.next_page_token
            if not token:
                break
        request = tenants_pb2.CreateTenantRequest(tenant=tenants_pb2.Tenant(name=name))
        return self._call(self.tenants.CreateTenant, request)

    def create_key(
        self, tenant_id: str, *, description: str = "", scopes: list[str] | None = None
    ) -> tenants_pb2.CreateApiKeyResponse:
        request = tenants_pb2.CreateApiKeyRequest(
            tenant_id=tenant_id,
            api_key=tenants_pb2.ApiKey(description=description, scopes=scopes or []),
        )
        return self._call(self.tenants.CreateApiKey, request)
